"""MobileI2V deployment toolchain."""
