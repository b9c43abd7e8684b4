"""Learners: HSNet (CP-Conv4d), VAT, ASNet, and the registry through which every head is built."""

from hmfss.heads.asnet import ASNetHead
from hmfss.heads.base import HEADS, Head, register_head
from hmfss.heads.hsnet import HSNetHead
from hmfss.heads.recipe import PhotometricAugmentation, Recipe
from hmfss.heads.vat import VATHead

__all__ = ["HEADS", "Head", "register_head", "HSNetHead", "VATHead", "ASNetHead", "Recipe", "PhotometricAugmentation"]
