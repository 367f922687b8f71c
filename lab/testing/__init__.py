"""The pytest plugin (`lab.testing.plugin`, entry point `nslab`) and the handles and expectations users
write their own interop tests with; the names below are for a test's type hints (`def test_x(nslab: Lab)`).
"""

from lab.testing.expect import ExpectationFailed
from lab.testing.handles import Capture, KernelNode, Lab, StackNode, Watch
from lab.testing.segments import Segment

__all__ = ["Capture", "ExpectationFailed", "KernelNode", "Lab", "Segment", "StackNode", "Watch"]
