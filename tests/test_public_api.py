"""``aca_flows``: the curated public surface, imported lazily."""

from __future__ import annotations


def test_the_public_surface_is_all_and_loads_lazily():
    import subprocess
    import sys

    import aca_flows

    assert sorted(aca_flows.__all__) == sorted([*aca_flows._EXPORTS, "__version__"])
    for name in aca_flows.__all__:
        assert getattr(aca_flows, name) is not None
    code = "import sys, aca_flows; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "False"  # `import aca_flows` (so `aca --help`) pays for nothing
