"""flagroll's tests. The helpers in tests/support assert too: their asserts are rewritten like those of
test modules, so that a failing helper says what it compared."""

import pytest

pytest.register_assert_rewrite("tests.support")
