"""Learners: HSNet (CP-Conv4d), VAT, ASNet, and the registry through which every head is built."""

from .asnet import ASNetHead
from .base import HEADS, Head, register_head
from .hsnet import HSNetHead
from .recipe import PhotometricAugmentation, Recipe
from .vat import VATHead

__all__ = ["HEADS", "Head", "register_head", "HSNetHead", "VATHead", "ASNetHead", "Recipe", "PhotometricAugmentation"]
