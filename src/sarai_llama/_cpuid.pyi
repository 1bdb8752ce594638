"""Type stub for the CPUID probe (src/_core/cpuid.c)."""

from typing import Optional

def features() -> Optional[list[str]]: ...
