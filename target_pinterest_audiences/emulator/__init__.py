"""A local emulator of the Pinterest Marketing API v5 parts the target uses.

It answers as Pinterest's published OpenAPI description says (a vendored
subset, ``pinterest_v5_subset.json``), rejects every request that does not
validate against it with a Pinterest-style 400, keeps customer-list
membership so tests can assert the exact final state, and offers fault
injection, latency and rate limiting for robustness and performance tests.

Run it in-process::

    from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(latency_ms=5)) as emulator:
        api_url = emulator.url            # http://127.0.0.1:PORT/v5
        ...
        assert emulator.members(list_id) == expected_hashes

or as a process (prints exactly one line, the API base URL, to stdout)::

    python -m target_pinterest_audiences.emulator --port 0

Module map: ``spec`` (contract, validation) with ``dialect`` (OpenAPI 3.0 ->
JSON Schema), ``dispatch`` (request pipeline), ``api`` (operations),
``state`` / ``records`` / ``pagination`` (data), ``matching`` (which
records match a Pinterest user), ``tokens`` (OAuth),
``faults``, ``ratelimit``, ``requestlog``, ``admin`` (``/_emulator/`` API),
``server`` (HTTP and the ``Emulator`` facade), ``config``.
"""

from .config import EmulatorConfig
from .faults import FaultConfigError
from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "FaultConfigError"]
