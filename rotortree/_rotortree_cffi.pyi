# The cffi-generated extension has no type information of its own: its
# functions and constants are declared in csrc/rotortree.h (the cdef region).
from typing import Any

ffi: Any
lib: Any
