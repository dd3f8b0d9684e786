"""Frozen teachers behind one interface: `create(name, weights=...)` -> Teacher."""
from .base import Teacher, TeacherFeatures
from .registry import available, create, register_teacher

__all__ = ["Teacher", "TeacherFeatures", "available", "create", "register_teacher"]
