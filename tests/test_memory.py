"""keep_freed_memory: large blocks come from the heap and stay there when freed (Linux/glibc).

Checked with glibc's own accounting (mallinfo2) rather than page-fault counts, which the
kernel's proactive reclaim of idle pages makes machine-dependent.
"""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import ctypes, sys, torch
    from hmfss.fast.memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    x = torch.empty(64 * 2**20)  # 256 MB
    mapped_while_held = libc.mallinfo2().hblkhd
    del x
    heap_after_free = libc.mallinfo2().arena
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
