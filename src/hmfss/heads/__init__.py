"""Learners: HSNet (CP-Conv4d), and the registry through which every head is built."""

from .base import HEADS, Head, register_head
from .hsnet import HSNetHead

__all__ = ["HEADS", "Head", "register_head", "HSNetHead"]
