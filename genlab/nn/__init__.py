"""Networks only (no losses): MLPs, DCGAN-style conv stacks, encoder/decoder nets."""

from genlab.nn.conv import ConvDecoder, ConvEncoder
from genlab.nn.mlp import MLP
from genlab.nn.nets import DecoderNet, EncoderNet

__all__ = ["MLP", "ConvEncoder", "ConvDecoder", "EncoderNet", "DecoderNet"]
