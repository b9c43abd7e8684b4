"""keep_freed_memory: large blocks come from the heap and stay there when freed (Linux/glibc).

Checked with glibc's own accounting (mallinfo2) rather than page-fault counts, which the
kernel's proactive reclaim of idle pages makes machine-dependent.
"""

import subprocess
import sys
import textwrap

import pytest

# the block is allocated the way PyTorch's CPU allocator does (posix_memalign, 64-byte
# alignment), without importing torch: the child process starts in a fraction of a second
SCRIPT = textwrap.dedent("""
    import ctypes, sys
    from hmfss.fast.memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    block = ctypes.c_void_p()
    assert libc.posix_memalign(ctypes.byref(block), 64, ctypes.c_size_t(256 * 2**20)) == 0  # 256 MB
    mapped_while_held = libc.mallinfo2().hblkhd
    libc.free(block)
    heap_after_free = libc.mallinfo2().arena
    assert "torch" not in sys.modules
    print(applied, mapped_while_held, heap_after_free)
""")

MB256 = 256 * 2**20


def allocator_figures(mode: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_large_blocks_come_from_the_heap_and_stay_there_when_freed():
    applied, mapped, heap = allocator_figures("keep")
    _, default_mapped, default_heap = allocator_figures("default")
    assert default_mapped >= MB256 and default_heap < MB256  # by default: its own mapping, unmapped on free
    assert applied and mapped < MB256 and heap >= MB256  # kept: from the heap, still there after free
