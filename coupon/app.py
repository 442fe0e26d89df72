"""The coupon subsystem as the gateway mounts it."""

from __future__ import annotations

from picool.kernel import Kernel
from picool.subsystem import Subsystem


def create(kernel: Kernel) -> Subsystem:
    """Build the coupon subsystem for kernel's process."""
    return Subsystem(name="coupon")
