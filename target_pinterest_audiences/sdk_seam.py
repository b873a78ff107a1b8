"""The seam with singer-sdk: every private SDK name the target relies on, in one place.

The public API (sinks, stream maps, the message reader, ``drain_all``, the CLI command)
covers most of what the target needs, but not holding STATE back until Pinterest
acknowledged the changes before it, reading records without the SDK's per-record
validation, or refusing bad config and input without echoing it. For those the target
overrides private SDK methods. They are all here, in :class:`SDKSeam`: each override
forwards to a public method the target implements, so no other module names a private
SDK attribute, and each says in its docstring why the public API does not suffice.

:data:`HOOKS` lists each private name with the signature used here and the SDK code that
calls it. :func:`seam_problems` checks them against the installed SDK: the canary in
``tests/test_sdk_seam.py`` fails, naming the hook, on a singer-sdk release that renames one,
changes its parameters or stops calling it. The README's "Upgrading singer-sdk" checklist
says what to do then.
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from types import FrameType
from typing import Any

from singer_sdk import Target


class SDKSeam(Target):
    """The private singer-sdk methods the target overrides, each forwarding to a public one."""

    # Messages: BaseSingerReader.process_lines dispatches each message type to these.

    def _process_record_message(self, message_dict: dict[str, Any]) -> None:
        """The SDK validates, parses and adds metadata to every record (most of a run's time),
        its errors echo record values, and no public hook sees a RECORD."""
        self.handle_record(message_dict)

    def _process_schema_message(self, message_dict: dict[str, Any]) -> None:
        """A bad SCHEMA must be refused naming the stream before the SDK's checks echo the
        line, and no public hook runs once a stream's sinks exist."""
        self.handle_schema(message_dict)

    def register_schema(self, message_dict: dict[str, Any]) -> None:
        """The SDK's own SCHEMA handling: register the stream's maps, (re)create its sinks."""
        super()._process_schema_message(message_dict)

    def _process_batch_message(self, message_dict: dict[str, Any]) -> None:
        """The SDK hands BATCH files to each sink, past stream maps, key checks and counting,
        and fails on a bad manifest with a traceback; records must take the RECORD path."""
        self.handle_batch(message_dict)

    # STATE: Target.drain_all passes the latest STATE here; nothing else writes it.

    def _write_state_message(self, state: dict[str, Any]) -> None:
        """STATE must wait until Pinterest acknowledged every change read before it; the SDK
        writes it from drain_all with no public hook to hold it back."""
        self.confirm_state(state)

    def write_state(self, state: dict[str, Any]) -> None:
        """Write STATE to stdout, the SDK's way."""
        super()._write_state_message(state)

    # Config: PluginBase.__init__ validates through _validate_config.

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's validator puts config values (secrets) in its messages and fills in
        defaults; the target's schema and cross-field rules run in its place."""
        return self.check_config(raise_errors=raise_errors)

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        """Settings from environment variables, parsed the SDK's way (its ``_env_var_config``),
        which ``--validate-config`` needs without constructing the target; no public API."""
        return dict(cls._env_var_config)

    # Signals: PluginBase registers _handle_termination for SIGTERM and SIGINT.

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """The SDK's handler drains inside the signal handler, wherever the main thread was,
        and exits 0 even when that drain fails; the target stops at a safe point instead."""
        self.handle_signal(signum, frame)

    def sdk_handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """The SDK's own reaction to a signal: drain every sink, then exit 0."""
        super()._handle_termination(signum, frame)

    # What the target implements -------------------------------------------------------

    @abc.abstractmethod
    def handle_record(self, message_dict: dict[str, Any]) -> None:
        """A RECORD message."""

    @abc.abstractmethod
    def handle_schema(self, message_dict: dict[str, Any]) -> None:
        """A SCHEMA message; :meth:`register_schema` does the SDK's part."""

    @abc.abstractmethod
    def handle_batch(self, message_dict: dict[str, Any]) -> None:
        """A BATCH message."""

    @abc.abstractmethod
    def confirm_state(self, state: dict[str, Any]) -> None:
        """The SDK would write ``state`` now; :meth:`write_state` it once that is safe."""

    @abc.abstractmethod
    def check_config(self, *, raise_errors: bool) -> list[str]:
        """The config's problems; raises ``ConfigValidationError`` if ``raise_errors``."""

    @abc.abstractmethod
    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGINT arrived (this runs inside the signal handler)."""


@dataclass(frozen=True)
class Hook:
    """One private singer-sdk name :class:`SDKSeam` relies on."""

    name: str
    signature: str | None
    """The parameters the seam passes (no annotations); None for a class property."""
    called_by: tuple[str, ...]
    """SDK methods (``Class.method`` in ``singer_sdk.plugin_base`` or ``target_base``)
    whose code must still use the name: otherwise the override is never called."""
    seam_method: str
    """The :class:`SDKSeam` method that uses it; its docstring says why."""

    @property
    def why(self) -> str:
        """Why the public API does not suffice (the seam method's docstring, on one line)."""
        return " ".join((inspect.getdoc(getattr(SDKSeam, self.seam_method)) or "").split())


_READER = "BaseSingerReader.process_lines"

HOOKS = (
    Hook("_process_record_message", "(self, message_dict)", (_READER,), "_process_record_message"),
    Hook("_process_schema_message", "(self, message_dict)", (_READER,), "_process_schema_message"),
    Hook("_process_batch_message", "(self, message_dict)", (_READER,), "_process_batch_message"),
    Hook("_write_state_message", "(self, state)", ("Target.drain_all",), "_write_state_message"),
    Hook(
        "_validate_config",
        "(self, *, raise_errors=True)",
        ("PluginBase.__init__",),
        "_validate_config",
    ),
    Hook(
        "_handle_termination",
        "(self, signum, frame)",
        ("PluginBase._setup_signal_handlers",),
        "_handle_termination",
    ),
    Hook("_env_var_config", None, (), "env_config"),
)
"""Every private singer-sdk name used in :class:`SDKSeam`, which is the only place using any."""


def seam_problems(sdk_class: type[Target] = Target, hooks: tuple[Hook, ...] = HOOKS) -> list[str]:
    """What no longer holds in the installed singer-sdk, one line per problem (empty: all well).

    Names are looked up on the SDK's class, not on the target, which defines them too.
    """
    problems = []
    for hook in hooks:
        where = f"singer-sdk {sdk_class.__name__}.{hook.name}"
        because = f"The target uses it because: {hook.why}"
        try:
            found = inspect.getattr_static(sdk_class, hook.name)
        except AttributeError:
            problems.append(f"{where} is gone. {because}")
            continue
        if hook.signature is None:
            if not isinstance(found, property):
                problems.append(f"{where} is no longer a class property. {because}")
            continue
        signature = _plain_signature(found)
        if signature != hook.signature:
            problems.append(f"{where} now takes {signature}, not {hook.signature}. {because}")
        for caller in hook.called_by:
            source = _source_of(caller)
            if source is None:
                problems.append(f"{where}: its caller {caller} is gone. {because}")
            elif hook.name not in source:
                problems.append(
                    f"{where} is no longer used by {caller}, so the target's override would "
                    f"never run. {because}"
                )
    return problems


def _plain_signature(function: object) -> str:
    """``(self, *, raise_errors=True)``: names, kinds and defaults, without annotations."""
    if not callable(function):
        return f"no parameters (it is a {type(function).__name__})"
    signature = inspect.signature(function)
    plain = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=plain, return_annotation=signature.empty))


def _source_of(qualified_name: str) -> str | None:
    """The code of an SDK method named ``Class.method``; None if it does not exist."""
    from singer_sdk import plugin_base, target_base

    class_name, method_name = qualified_name.split(".")
    owner = getattr(plugin_base, class_name, None) or getattr(target_base, class_name, None)
    method = inspect.getattr_static(owner, method_name, None)
    if method is None:
        return None
    return inspect.getsource(method)
