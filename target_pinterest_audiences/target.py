"""The Singer target: config, the record path, checkpoints and the end-of-run report.

Data flows one way: a RECORD line is decoded (``reader``), read through the record contract
into hashed identifiers and audience changes (``sinks`` -> ``memberships`` ->
``identifiers``), merged and sent by the ``uploader`` through ``customer_lists`` and the
HTTP ``client``.

STATE is emitted only after the uploader flushed and Pinterest acknowledged every change
read before it, so a crash never moves the tap's bookmark past unsent changes.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
from singer_sdk.exceptions import (
    ConfigValidationError,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.helpers.capabilities import STREAM_MAPS_CONFIG, PluginCapabilities
from singer_sdk.mapper import RemoveRecordTransform, SameRecordTransform, StreamMap
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_pinterest_audiences import redaction
from target_pinterest_audiences.batch_files import BatchFiles
from target_pinterest_audiences.client import ClientSettings, Pacer, PinterestClient, RetryPolicy
from target_pinterest_audiences.config import (
    CONFIG_SCHEMA,
    LEDGER_MODES,
    Settings,
    cross_field_problems,
    schema_problems,
    unknown_key_warnings,
)
from target_pinterest_audiences.config_files import ConfigFileError, ConfigInput, read_config_files
from target_pinterest_audiences.customer_lists import CustomerLists
from target_pinterest_audiences.errors import InputError, TargetError, TerminationRequestedError
from target_pinterest_audiences.ledger import SCHEMA_VERSION, open_ledger
from target_pinterest_audiences.mirror import MirrorSync
from target_pinterest_audiences.preflight import (
    check_connection,
    config_problems,
    config_warnings,
)
from target_pinterest_audiences.progress import ProgressLogger
from target_pinterest_audiences.readback import read_back
from target_pinterest_audiences.reader import NumberedSingerReader
from target_pinterest_audiences.rejects import RejectFile
from target_pinterest_audiences.report import RunReport, StreamReport
from target_pinterest_audiences.sdk_seam import SDKSeam
from target_pinterest_audiences.sinks import SINK_CLASSES, AudienceSink, ChangesSink, SinkContext
from target_pinterest_audiences.sync_modes import MIRROR, UPSERT, AudienceModes
from target_pinterest_audiences.tokens import TokenProvider, provider_for
from target_pinterest_audiences.uploader import Uploader
from target_pinterest_audiences.upsert import UpsertSync

# How often the record path looks at the clock (for checkpoints and the record-count metric).
_AGE_CHECK_SECONDS = 0.25
_monotonic = time.monotonic


@dataclass
class _Route:
    """One input stream's counters and the sinks (through their maps) its records feed."""

    report: StreamReport
    destinations: list[tuple[StreamMap | None, AudienceSink, frozenset[str]]]


# Problems with the input stream: the changes read before them are still delivered.
_INPUT_ERRORS = (
    InputError,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
    InvalidInputLine,
)
# Every failure that is reported as a message rather than a traceback.
_EXPECTED_ERRORS = (TargetError, *_INPUT_ERRORS)


class TargetPinterestAudiences(SDKSeam):
    """Sync audience membership (email, IDFA, Android ID) to Pinterest Ads customer lists."""

    name = "target-pinterest-audiences"
    # A copy: the SDK appends its built-in settings to this dict in place.
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)
    default_sink_class = ChangesSink  # the sink of each stream: get_sink_class
    message_reader_class = NumberedSingerReader
    capabilities = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.BATCH,  # BATCH messages: see batch_files
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    def __init__(
        self,
        *,
        config: dict[str, Any] | Path | str | list[Path | str] | None = None,
        parse_env_config: bool = False,
        validate_config: bool = True,
        setup_mapper: bool = True,
        message_reader: NumberedSingerReader | None = None,
    ) -> None:
        """Validate config, then wire the uploader before the first record arrives."""
        self.redactor = redaction.Redactor()
        redaction.install(self.redactor)
        super().__init__(
            config=config,  # type: ignore[arg-type]
            parse_env_config=parse_env_config,
            validate_config=validate_config,
            setup_mapper=setup_mapper,
            message_reader=message_reader,
        )
        self.settings = Settings.from_config(self.config)
        for secret in self.settings.secrets():
            self.redactor.add_secret(secret)
        for warning in self.settings.warnings:
            self.logger.warning("%s", warning)
        # Sinks hold no batch, so draining them in parallel would only add threads.
        self.max_parallelism = 1
        self.run_report = RunReport(dry_run=self.settings.dry_run)
        self.rejects = RejectFile(self.settings.reject_file)
        self.client: PinterestClient | None = None
        self.tokens: TokenProvider | None = None
        self.lists: CustomerLists | None = None
        self.mirror, self.upsert = self._open_ledger_modes()
        self.modes = AudienceModes(self.mirror, self.upsert)
        self.uploader = self._build_uploader()
        if self.upsert is not None:
            self.upsert.attach(self.uploader, self.modes)
        self.sink_context = SinkContext(
            ad_account_id=self.settings.ad_account_id,
            uploader=self.uploader,
            report=self.run_report,
            rejects=self.rejects,
            modes=self.modes,
            mirror=None if self.mirror is None else self.mirror.snapshot,
            upsert=self.upsert,
        )
        self._schema_source: str | None = None
        self.progress = ProgressLogger(self.run_report, self.settings.progress_interval_seconds)
        self.progress.start()
        self._finished = False
        self._routes: dict[str, _Route] = {}
        self._next_age_check = 0.0
        self._next_checkpoint = _monotonic() + self.settings.checkpoint_interval_seconds

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict[str, Any]) -> None:
        """Offer only the SDK settings that mean something here: the stream maps'.

        The other built-in target settings (``batch_size_rows``, ``load_method``,
        ``add_record_metadata``, ...) do not apply: the target batches by
        ``records_per_request`` and keeps no table.
        """
        properties = config_jsonschema.setdefault("properties", {})
        for name, schema in STREAM_MAPS_CONFIG["properties"].items():
            properties.setdefault(name, schema)

    def check_config(self, *, raise_errors: bool = True) -> list[str]:
        """Schema plus cross-field rules, with messages that never echo a value."""
        schema = copy.deepcopy(self.config_jsonschema)
        self.append_builtin_config(schema)
        for warning in unknown_key_warnings(self.config, schema["properties"]):
            self.logger.warning("%s", warning)
        errors = schema_problems(self.config, schema) + cross_field_problems(self.config)
        if errors and raise_errors:
            raise ConfigValidationError("Config validation failed", errors=errors, schema=schema)
        return errors

    def _open_ledger_modes(self) -> tuple[MirrorSync | None, UpsertSync | None]:
        """Open the ledger now if a stream may need it, so a bad ledger fails before input."""
        settings = self.settings
        modes = settings.modes & LEDGER_MODES
        if not modes:
            return None, None
        ledger = open_ledger(
            path=settings.ledger_path,
            url=settings.ledger_url,
            ad_account_id=settings.ad_account_id,
            dry_run=settings.dry_run,
        )
        if ledger.migrated_from is not None:
            self.logger.info(
                "Migrated the %s from schema version %d to %d",
                ledger.description,
                ledger.migrated_from,
                SCHEMA_VERSION,
            )
        self.logger.info("%s mode, using the %s", " and ".join(sorted(modes)), ledger.description)
        mirror = upsert = None
        if MIRROR in modes:
            mirror = MirrorSync(
                ledger,
                self.run_report,
                max_removal_fraction=settings.max_removal_fraction,
                dry_run=settings.dry_run,
            )
        if UPSERT in modes:
            upsert = UpsertSync(ledger, self.run_report, dry_run=settings.dry_run)
        return mirror, upsert

    def get_sink_class(self, stream_name: str) -> type[AudienceSink]:
        """The sink of the stream's sync mode (``sync_mode``, ``stream_sync_modes``)."""
        return SINK_CLASSES[self.settings.mode_for(stream_name, self._schema_source)]

    @property
    def _mirror_streams(self) -> bool:
        """Whether this run is (partly) a mirror snapshot, still to be applied at its end.

        With ``sync_mode: mirror`` every run is one, even before its first SCHEMA: a run
        stopped that early applied no snapshot either. Otherwise, once a stream that
        ``stream_sync_modes`` puts in mirror mode took part.
        """
        if self.mirror is None:
            return False
        return self.settings.sync_mode == MIRROR or bool(self.mirror.snapshot.streams)

    def _build_uploader(self) -> Uploader:
        settings = self.settings
        lists: CustomerLists | None = None
        if not settings.dry_run:
            self.tokens = provider_for(settings, on_new_secret=self.redactor.add_secret)
            tokens = self.tokens
            self.client = PinterestClient(
                settings.api_url,
                tokens,
                settings=ClientSettings(
                    read_timeout_seconds=settings.request_timeout_seconds,
                    retry=RetryPolicy(max_total_wait_seconds=settings.max_retry_wait_seconds),
                ),
                write_pacer=Pacer(settings.max_write_requests_per_minute),
                read_pacer=Pacer(settings.max_read_requests_per_minute),
            )
            lists = CustomerLists(self.client, settings.ad_account_id)
        self.lists = lists
        return Uploader(
            lists,
            self.run_report,
            records_per_request=settings.records_per_request,
            max_parallel_requests=settings.max_parallel_requests,
            create_audiences=settings.create_audiences,
            on_acknowledged=self.modes.acknowledged if self.modes.ledgers else None,
        )

    # The record path ------------------------------------------------------------------

    @property
    def _line_number(self) -> int:
        reader = self.message_reader
        return reader.line_number if isinstance(reader, NumberedSingerReader) else 0

    def handle_record(self, message_dict: dict[str, Any]) -> None:
        """A lean version of the SDK's record path (see ``AudienceSink.get_validator``).

        Keeps its semantics that matter here: stream maps, RECORD-before-SCHEMA and key
        property errors, the record-count metric, and the max-age drain. Drops the
        per-record JSON-schema validation, timestamp parsing and metadata columns, which
        cost most of the time and are meaningless for an audience list, and looks up the
        stream's maps and sinks once per SCHEMA instead of once per record.
        """
        stream = message_dict.get("stream")
        record = message_dict.get("record")
        route = self._routes.get(stream) if isinstance(stream, str) else None
        if route is None:
            route = self._route(stream)
        report = route.report
        report.records = number = report.records + 1
        if not isinstance(record, dict):
            msg = (
                f"stream '{stream}', record {number} (input line {self._line_number}): the "
                "RECORD message has no 'record' object"
            )
            raise InputError(msg)
        for stream_map, sink, keys in route.destinations:
            transformed: dict[str, Any] | None = record
            if stream_map is not None:
                transformed = stream_map.transform(copy.copy(record))
            if transformed is None:
                continue
            if keys and not transformed.keys() >= keys:
                msg = (
                    f"stream '{stream}', record {number} (input line {self._line_number}) "
                    f"lacks key properties {sorted(keys)} declared by its SCHEMA"
                )
                raise MissingKeyPropertiesError(msg)
            sink.accept(transformed, report, number)
        now = _monotonic()
        if now >= self._next_age_check:
            self._next_age_check = now + _AGE_CHECK_SECONDS
            for _, sink, _ in route.destinations:
                sink.count_records()
            if now >= self._next_checkpoint:
                self.checkpoint()

    def checkpoint(self) -> None:
        """Every ``checkpoint_interval_seconds``: send what was read, then confirm STATE."""
        self.logger.info("Checkpoint: sending the changes read so far, then confirming STATE")
        self.drain_all()  # hands the latest STATE to confirm_state
        self._next_checkpoint = _monotonic() + self.settings.checkpoint_interval_seconds

    def handle_batch(self, message_dict: dict[str, Any]) -> None:
        """BATCH: each record of the manifest's files takes the RECORD path (``batch_files``)."""
        stream = message_dict.get("stream")
        records = BatchFiles(message_dict, self._line_number)
        for record in records:
            try:
                self.handle_record({"type": "RECORD", "stream": stream, "record": record})
            except _INPUT_ERRORS as exc:  # name the file and line, not only the BATCH line
                raise InputError(f"{exc} (in {records.position})") from None
            signum = getattr(self.message_reader, "stop_signal", None)
            if signum is not None:  # a batch can be long: stop between its records
                raise TerminationRequestedError(signum)

    def _route(self, stream: object) -> _Route:
        """Where records of ``stream`` go; raises the SDK's errors for unknown streams."""
        if not isinstance(stream, str) or not stream.strip():
            msg = f"input line {self._line_number}: a RECORD needs a non-empty 'stream' string"
            raise InputError(msg)
        report = self.run_report.stream(stream)
        stream_maps = self.mapper.stream_maps.get(stream)
        if stream_maps is None:
            msg = (
                f"stream '{stream}', record {report.records + 1} (input line "
                f"{self._line_number}): a RECORD arrived before the stream's SCHEMA message; "
                "check the tap's output"
            )
            raise RecordsWithoutSchemaException(msg)
        destinations = []
        for stream_map in stream_maps:
            sink = self._active_sink(stream_map.stream_alias)
            if sink is None:
                msg = f"stream '{stream_map.stream_alias}' has no SCHEMA"
                raise RecordsWithoutSchemaException(msg)
            # The SDK's default map with flattening off returns the record unchanged.
            identity = isinstance(stream_map, SameRecordTransform) and not (
                stream_map.flattening_enabled
            )
            destinations.append(
                (None if identity else stream_map, sink, frozenset(sink.key_properties))
            )
        route = _Route(report, destinations)
        self._routes[stream] = route
        return route

    def _active_sink(self, stream_name: str) -> AudienceSink | None:
        """The sink the stream's SCHEMA created, if any."""
        if not self.sink_exists(stream_name):
            return None
        sink = self.get_sink(stream_name)
        return sink if isinstance(sink, AudienceSink) else None

    def handle_schema(self, message_dict: dict[str, Any]) -> None:
        """Check the SDK's requirements first, so the error names the stream."""
        stream = message_dict.get("stream")
        schema = message_dict.get("schema")
        stream_problem = _stream_name_problem(stream)
        if stream_problem is not None:
            msg = f"input line {self._line_number}: the SCHEMA message's {stream_problem}"
            raise InvalidInputLine(msg)
        key_problem = _key_properties_problem(message_dict.get("key_properties"))
        if key_problem is not None:
            msg = f"stream '{stream}' (input line {self._line_number}): {key_problem}"
            raise InvalidInputLine(msg)
        if not isinstance(schema, dict) or "properties" not in schema:
            msg = (
                f"stream '{stream}' (input line {self._line_number}): the SCHEMA message has no "
                "'schema' object with 'properties'"
            )
            raise InvalidInputLine(msg)
        self._routes.clear()  # maps and sinks may be replaced for a new schema
        self._schema_source = str(stream)
        try:
            self.register_schema(message_dict)
        finally:
            self._schema_source = None
        for stream_map in self.mapper.stream_maps.get(str(stream), []):
            # A stream mapped away (stream_maps: {stream: null}) feeds nothing.
            if isinstance(stream_map, RemoveRecordTransform):
                continue
            alias_problem = _stream_name_problem(stream_map.stream_alias)
            if alias_problem is not None:
                msg = f"stream '{stream}': stream_maps renames it; the new {alias_problem}"
                raise InvalidInputLine(msg)
            sink = self._active_sink(stream_map.stream_alias)
            if sink is None:
                continue
            if sink.mode == UPSERT and not sink.key_properties:
                msg = (
                    f"stream '{stream_map.stream_alias}' (input line {self._line_number}) is in "
                    "upsert mode but its SCHEMA declares no key_properties: upsert mode "
                    "replaces rows by key. Give the tap's stream a primary key, or use another "
                    "sync mode for it (stream_sync_modes)"
                )
                raise InputError(msg)
            if sink.mode == MIRROR and self.mirror is not None:
                self.mirror.observe_stream(stream_map.stream_alias)

    # Checkpoints and the end of the run ----------------------------------------------

    def confirm_state(self, state: dict[str, Any]) -> None:
        """Emit STATE only once Pinterest acknowledged every change read before it.

        A dry run sends nothing, so it confirms nothing: an orchestrator storing its STATE
        would skip those records on the real run. In mirror mode the changes are only
        known once the whole snapshot is read, so STATE waits for the end of the run.
        """
        if self.settings.dry_run:
            return
        if self._mirror_streams and not (self.mirror and self.mirror.applied):
            return
        self._send_all()
        self.write_state(state)

    def _send_all(self) -> None:
        """Merge upsert rows gathered so far, then send and await every pending change."""
        if self.upsert is not None:
            self.upsert.apply()
        self.uploader.flush()
        if self.upsert is not None:
            self.upsert.settle()

    def process_endofpipe(self) -> None:
        """Apply the mirror difference if any, drain, flush, read lists back, report."""
        if self.mirror is not None:
            for stream, audience in self.mirror.coverage():
                self.modes.claim(audience, MIRROR, stream)
            self.mirror.apply(self.uploader)
        super().process_endofpipe()
        self._send_all()
        self._read_back_lists()
        self.finish()

    def _read_back_lists(self) -> None:
        """Put Pinterest's status and matched size of every touched list in the report."""
        if self.lists is not None and self.settings.report_list_status:
            read_back(self.lists, self.uploader.list_ids(), self.run_report)

    def finish(self) -> None:
        """Close resources and report (runs once, on success or failure)."""
        if self._finished:
            return
        self._finished = True
        self.progress.stop()
        if self.upsert is not None:
            try:
                self.upsert.abandon()  # rows read and never merged (a failed run)
            except Exception as exc:  # the summary must still be logged
                self.logger.warning("Could not record the upsert rows not sent: %s", exc)
        self.uploader.close()
        if self.upsert is not None:
            try:
                self.upsert.report()
            except Exception as exc:  # the summary must still be logged
                self.logger.warning("Could not read the upsert ledger's counts: %s", exc)
        if self.client is not None:
            self.client.close()
        if self.tokens is not None:
            self.tokens.close()
        self.rejects.close()
        for mode in (self.mirror, self.upsert):
            if mode is None:
                continue
            try:
                mode.close()
            except TargetError as exc:  # a ledger that failed may fail its last commit too
                self.logger.warning(
                    "The ledger's last write failed (the next run sends again what it did "
                    "not record): %s",
                    exc.__cause__ or exc,
                )
        self.run_report.log_summary()
        if self.settings.report_path is not None:
            self.run_report.write_json(self.settings.report_path)

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """On SIGTERM/SIGINT: stop at the next safe point; the stop itself runs outside.

        Doing the work here, as the SDK does, runs a flush in the middle of whatever the
        main thread was doing (holding a lock, half-way through a dispatch) and exits 0
        even when that final flush fails. Instead: between records, while waiting for the
        next input line, unwind at once; otherwise finish the current record first.
        """
        reader = self.message_reader
        if not isinstance(reader, NumberedSingerReader):  # a custom reader: the SDK's way
            self.sdk_handle_signal(signum, frame)
            return
        reader.stop_signal = signum
        if reader.waiting_for_input:
            raise TerminationRequestedError(signum)

    def stop_on_signal(self, signum: int) -> int:
        """Send what was read, confirm the last STATE, report; return the exit code."""
        mirror_run = self._mirror_streams
        if mirror_run and self.mirror is not None:
            # Half a snapshot is not a snapshot: applying it would remove everyone not
            # read yet. The next run starts over from the full snapshot.
            message = (
                f"Received signal {signum} during a mirror run: stopping without applying it"
                + ("" if not self.mirror.started else " (part of the difference was sent)")
            )
            self.logger.error("%s", message)
            self.run_report.failed(message)
        else:
            self.logger.info("Received signal %d: sending what was read, then stopping", signum)
        try:
            # Changes and upsert rows read so far are valid on their own: deliver them (and,
            # without a pending mirror snapshot, confirm the last STATE).
            self._send_all()
            self.drain_all(is_endofpipe=True)
        except Exception as exc:  # report and exit non-zero whatever went wrong
            self.logger.error("Stopping after signal %d failed: %s", signum, exc)
            self.run_report.failed(self.redactor.scrub(f"stopping after signal {signum}: {exc}"))
            self.finish()
            return 1
        self.finish()
        return 1 if mirror_run else 0

    @classmethod
    def cb_config(  # type: ignore[override]  # our own result type: only our invoke reads it
        cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]
    ) -> ConfigInput:
        """Read ``--config`` files; a missing or broken one is a one-line error, exit 1."""
        try:
            config, parse_env = read_config_files(value)
        except ConfigFileError as exc:
            cls.logger.error("%s", exc)
            sys.exit(1)
        return ConfigInput(config=config, parse_env=parse_env)

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, plus the two checks a CI pipeline runs before a deploy."""
        command = super().get_singer_command()
        command.params.extend(
            [
                click.Option(
                    ["--validate-config"],
                    is_flag=True,
                    help="Validate the config (schema and cross-field rules), print what is "
                    "wrong per key, exit 0 or 1. Reads no input, sends nothing.",
                ),
                click.Option(
                    ["--check-connection"],
                    is_flag=True,
                    help="Validate the config, then read the ad account and one page of "
                    "customer lists to check the token, its scopes and the ad account.",
                ),
            ]
        )
        return command

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: ConfigInput | None = None,
        file_input: IO[str] | None = None,
        validate_config: bool = False,
        check_connection: bool = False,
    ) -> None:
        """Run the target; expected failures print a clear message and exit 1."""
        if about:  # what PluginBase.invoke does; Target.invoke would also run the target
            cls.print_about(about_format)
            sys.exit(0)
        cls.print_version(print_fn=cls.logger.info)
        config = config or ConfigInput()
        if validate_config or check_connection:
            sys.exit(cls.preflight(config, connect=check_connection))
        try:
            target = cls(
                config=config.config, validate_config=True, parse_env_config=config.parse_env
            )
        except TargetError as exc:  # e.g. an unreadable token store or ledger
            cls.logger.error("%s", exc)
            sys.exit(1)
        try:
            target.listen(file_input)
        except TerminationRequestedError as stop:
            sys.exit(target.stop_on_signal(stop.signum))
        except _EXPECTED_ERRORS as exc:
            target.stop_after_failure(exc)
            sys.exit(1)
        except Exception as exc:
            target.stop_after_failure(exc, unexpected=True)
            sys.exit(1)

    @classmethod
    def preflight(cls, config_input: ConfigInput, *, connect: bool) -> int:
        """``--validate-config`` / ``--check-connection``: print findings, return exit code."""
        redactor = redaction.Redactor()
        redaction.install(redactor)
        config = dict(config_input.config)
        if config_input.parse_env:
            config.update(cls.env_config())
        schema = copy.deepcopy(cls.config_jsonschema)
        cls.append_builtin_config(schema)
        for warning in unknown_key_warnings(config, schema["properties"]):
            print(f"WARN {warning}")
        problems = config_problems(config, schema)
        for problem in problems:
            print(f"FAIL {problem}")
        if problems:
            print(f"Config is invalid: {len(problems)} problem(s).")
            return 1
        print("OK   config is valid")
        settings = Settings.from_config(config)
        for secret in settings.secrets():
            redactor.add_secret(secret)
        for finding in config_warnings(settings):
            print(redactor.scrub(str(finding)))
        if not connect:
            return 0
        checks = check_connection(settings)
        for check in checks:
            print(redactor.scrub(str(check)))
        return 0 if all(check.ok for check in checks) else 1

    def stop_after_failure(self, exc: BaseException, *, unexpected: bool = False) -> None:
        """Report a failure that stops the run, after delivering what can be delivered.

        When the input breaks, the changes read before the bad line are still valid: send
        them, so they are not held hostage by a broken tap, and confirm the last STATE the
        tap sent before the bad line. A failure to send is not retried here (the sync
        already failed), and a mirror run is never applied half-read.
        """
        if isinstance(exc, _INPUT_ERRORS) and not self.settings.dry_run:
            try:
                self._send_all()
                self.drain_all()  # confirms the last STATE the tap sent (see confirm_state)
            except TargetError as flush_exc:
                self.logger.error("%s", flush_exc)
        message = f"unexpected {type(exc).__name__}: {exc}" if unexpected else str(exc)
        self.run_report.failed(self.redactor.scrub(message))
        if self._mirror_streams and self.mirror is not None and not self.mirror.applied:
            self.logger.error(
                "The mirror run did not complete%s",
                "; part of the difference was sent"
                if self.mirror.started
                else ": nothing was sent",
            )
        self.finish()
        if unexpected:
            self.logger.error("Unexpected error: %s", exc, exc_info=exc)
        else:
            self.logger.error("%s", exc)


def _stream_name_problem(stream: object) -> str | None:
    """Why ``stream`` cannot name a stream (it names the audience of plain records)."""
    if not isinstance(stream, str):
        return "'stream' must be a string"
    if not stream.strip():
        return (
            "'stream' name is empty; it names the audience of records without an "
            "audience_key, and an empty list name is refused like an empty audience_key"
        )
    return None


def _key_properties_problem(key_properties: object) -> str | None:
    """Why a SCHEMA's ``key_properties`` is not a list of property names, if it is not."""
    if key_properties is None or (
        isinstance(key_properties, list) and all(isinstance(k, str) for k in key_properties)
    ):
        return None
    if isinstance(key_properties, str):
        return (
            "key_properties must be a list of property names, not a string "
            f'(write ["{key_properties}"] for one key)'
        )
    if isinstance(key_properties, list):
        kinds = sorted({type(k).__name__ for k in key_properties if not isinstance(k, str)})
        return f"key_properties must be a list of strings; it contains {', '.join(kinds)}"
    return f"key_properties must be a list of property names, not {type(key_properties).__name__}"


def main() -> None:
    """Console entry point (same as the ``target-pinterest-audiences`` script)."""
    TargetPinterestAudiences.cli()


if __name__ == "__main__":
    logging.captureWarnings(capture=True)
    main()
