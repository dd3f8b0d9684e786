"""Frozen teachers behind one interface: `create(name, weights=...)` -> Teacher."""
from .base import Teacher, TeacherFeatures
from .registry import available, build_timm, create, register_teacher

__all__ = ["Teacher", "TeacherFeatures", "available", "build_timm", "create", "register_teacher"]
