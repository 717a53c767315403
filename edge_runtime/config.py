"""Configuration of the capture service (``edge-runtime run``).

The configuration is a YAML file validated by the pydantic models below.
Unknown keys are rejected, so a misspelt key fails at start instead of being
ignored. Command-line flags override the file for the common cases through
``apply_overrides``. ``examples/config.yaml`` documents every key.
"""

from __future__ import annotations

import difflib
import logging
import re
import socket
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_runtime.errors import ConfigError
from edge_runtime.substitution import load_yaml
from edge_runtime.yaml_location import compose, line_of

logger = logging.getLogger(__name__)

ROLES = ("detector", "emotion", "age", "gender", "ethnicity")
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

# A device id becomes one MQTT topic level and part of the client id, so it
# must not contain the topic separator or the wildcards.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TOPIC_PREFIX_PATTERN = r"^[^#+\s]+$"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SourceConfig(_Strict):
    """Frame source spec, read pacing and reconnect back-off."""

    spec: str = Field(
        "0",
        description=(
            "Camera index ('0'), video device path (/dev/video0), video file path, stream URL "
            "(rtsp://, rtsps://, rtmp://, http(s)://, udp://, tcp://, srt://) or GStreamer "
            "pipeline (any string containing '!')"
        ),
    )
    realtime: bool = Field(
        False,
        description=(
            "Pace a video file at its own fps and drop the frames the pipeline cannot keep up "
            "with. False reads every frame of a file as fast as possible. Live sources always "
            "run in real time"
        ),
    )
    every_n: int = Field(1, ge=1, description="Analyze every N-th frame of the source and skip the others")
    reconnect_min_s: float = Field(0.5, gt=0, description="First wait in seconds before reopening a lost live source")
    reconnect_max_s: float = Field(30.0, gt=0, description="Maximum wait in seconds between reopen attempts")
    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Live sources: seconds without a frame after which the source counts as stalled and is "
            "reopened, also while a read is still blocked"
        ),
    )
    loop: bool = Field(
        False,
        description=(
            "Video files only: restart at frame 0 when the file ends, with timestamps that keep "
            "growing, so the service runs until stopped"
        ),
    )

    @field_validator("spec")
    @classmethod
    def _check_spec(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source.spec is empty; give a camera index, file path, stream URL or pipeline")
        return value.strip()

    @model_validator(mode="after")
    def _check_backoff(self) -> "SourceConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below reconnect_min_s ({self.reconnect_min_s}); "
                "raise reconnect_max_s"
            )
        return self


class ModelChoice(_Strict):
    """The model of one role, with an optional backend override.

    Precision is chosen for all roles together (``models.precision``), or
    per model package in the device profile's ``overrides``.
    """

    name: str = Field(..., min_length=1, description="Model name in the catalog or the local store")
    backend: Optional[str] = Field(None, description="Backend to use for this role (onnxruntime, openvino, tflite)")


def _role_kind(value: Any) -> str:
    return "Off" if value is False else "ModelChoice"


# A callable discriminator validates a value against one member only, so an
# invalid mapping reports its own errors and not also "Input should be False".
RoleChoice = Optional[
    Annotated[
        Union[Annotated[ModelChoice, Tag("ModelChoice")], Annotated[Literal[False], Tag("Off")]],
        Discriminator(_role_kind),
    ]
]


class ModelsConfig(_Strict):
    """The model of each role.

    A role takes a model name or a mapping ``{name, backend}``. ``null``
    (the default) lets the device profile choose and ``false`` turns the
    role off.
    """

    detector: RoleChoice = Field(None, description="Face detector")
    emotion: RoleChoice = Field(None, description="Facial expression classifier")
    age: RoleChoice = Field(None, description="Age estimator")
    gender: RoleChoice = Field(None, description="Gender classifier")
    ethnicity: RoleChoice = Field(None, description="Ethnicity classifier")
    backend: Optional[str] = Field(None, description="Backend for every role without its own backend")
    precision: Optional[Literal["fp32", "fp16", "int8"]] = Field(
        None, description="Variant precision for every model; None follows the device profile's order"
    )

    @field_validator(*ROLES, mode="before")
    @classmethod
    def _expand_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if value is True:
            raise ValueError("true is not a model; give a model name, null for the profile's choice or false")
        return value

    def role_models(self) -> dict[str, Optional[str]]:
        """Return the explicit role choices: a model name, or None for a role turned off.

        Roles left to the device profile are absent.
        """
        chosen: dict[str, Optional[str]] = {}
        for role in ROLES:
            value = getattr(self, role)
            if value is False:
                chosen[role] = None
            elif isinstance(value, ModelChoice):
                chosen[role] = value.name
        return chosen

    def role_backends(self) -> dict[str, str]:
        """Return the backend override of each role that has its own."""
        return {
            role: value.backend
            for role in ROLES
            if isinstance(value := getattr(self, role), ModelChoice) and value.backend
        }


class TrackingConfig(_Strict):
    """IoU tracker settings."""

    min_iou: float = Field(0.3, gt=0, le=1, description="Minimum IoU between a track's last box and a detection")
    max_missed: int = Field(
        10, ge=0, description="Analyzed frames a track may go unmatched before it is closed"
    )


class TlsConfig(_Strict):
    """TLS files for an ``mqtts://`` broker."""

    ca_file: Optional[Path] = Field(None, description="CA bundle that signs the broker certificate; None uses the system store")
    cert_file: Optional[Path] = Field(None, description="Client certificate (PEM) for mutual TLS")
    key_file: Optional[Path] = Field(None, description="Private key (PEM) of the client certificate")
    insecure: bool = Field(False, description="Skip the broker host name check; for test brokers only")

    @model_validator(mode="after")
    def _check_pair(self) -> "TlsConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.tls needs both cert_file and key_file, or neither")
        return self


class MqttConfig(_Strict):
    """Broker connection and topics."""

    broker: str = Field(
        DEFAULT_BROKER,
        description="Broker URL mqtt://host:port, or mqtts://host:port for TLS (default ports 1883 and 8883)",
    )
    prefix: str = Field("edge-runtime", description="First topic levels before the device id")
    device_id: Optional[str] = Field(
        None, description="Topic level and client id suffix of this device; None uses the host name"
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of the faces and stats messages")
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keep-alive in seconds")
    session_expiry_s: int = Field(
        3600, ge=0, description="Seconds the broker keeps the session after a connection drop, so QoS 1 state survives"
    )
    username: Optional[str] = Field(None, description="User name for the broker")
    password: Optional[SecretStr] = Field(
        None,
        description=(
            "Broker password in plain text; accepted with a warning. Prefer password_file, e.g. "
            "password_file: ${credential:mqtt-password}"
        ),
    )
    password_file: Optional[Path] = Field(
        None,
        description=(
            "File holding the broker password (one line); keeps the secret out of this file. "
            "${credential:mqtt-password} names the systemd credential of that id"
        ),
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    outbox_path: Optional[Path] = Field(
        None,
        description=(
            "SQLite file that keeps faces and stats messages until the broker acknowledges them, across "
            "restarts; None uses $STATE_DIRECTORY/outbox.sqlite, else "
            "$XDG_STATE_HOME/edge-runtime/outbox.sqlite (~/.local/state)"
        ),
    )
    outbox_max_messages: int = Field(
        100_000, ge=1, description="Maximum messages in the outbox; the oldest unsent are dropped first"
    )
    outbox_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Maximum payload bytes in the outbox; the oldest unsent messages are dropped first",
    )
    message_expiry_s: Optional[int] = Field(
        604_800,
        ge=1,
        le=2**32 - 1,
        description=(
            "MQTT message expiry interval of faces and stats messages in seconds, also the longest time a "
            "message waits in the outbox; a replayed message carries the time it has left. None never expires"
        ),
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay in seconds")
    reconnect_max_s: float = Field(60.0, gt=0, description="Maximum reconnect delay in seconds")
    flush_timeout_s: float = Field(5.0, ge=0, description="Maximum seconds a shutdown waits for queued messages")

    @model_validator(mode="before")
    @classmethod
    def _rename_queue_max(cls, data: Any) -> Any:
        """Accept the old key ``queue_max`` as ``outbox_max_messages``."""
        if not isinstance(data, Mapping) or "queue_max" not in data:
            return data
        if "outbox_max_messages" in data:
            raise ValueError("queue_max is the old name of outbox_max_messages; remove queue_max")
        logger.warning(
            "mqtt.queue_max is deprecated because the outbox is now a file; rename it to mqtt.outbox_max_messages"
        )
        data = dict(data)
        data["outbox_max_messages"] = data.pop("queue_max")
        return data

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @model_validator(mode="after")
    def _check_password_source(self) -> "MqttConfig":
        if self.password is not None and self.password_file is not None:
            raise ValueError("mqtt.password and mqtt.password_file are both set; keep only password_file")
        if self.username is None and (self.password is not None or self.password_file is not None):
            # paho-mqtt sends a password only together with a user name.
            raise ValueError("mqtt.username is missing, but a password is set; set mqtt.username as well")
        return self

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not re.fullmatch(TOPIC_PREFIX_PATTERN, value):
            raise ValueError(
                f"topic prefix {value!r} is invalid; it must not be empty or contain '+', '#' or whitespace"
            )
        return value

    @field_validator("device_id")
    @classmethod
    def _check_device_id(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not re.fullmatch(DEVICE_ID_PATTERN, value):
            raise ValueError(
                f"device id {value!r} is invalid; use 1 to 64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit (the id becomes an MQTT topic level)"
            )
        return value

    @property
    def resolved_device_id(self) -> str:
        """The configured device id, or one derived from the host name."""
        if self.device_id:
            return self.device_id
        return device_id_from_hostname(socket.gethostname())


class LoggingConfig(_Strict):
    """Log levels of the service."""

    level: Optional[LogLevel] = Field(
        None, description="Level of the root logger; replaces --log-level when set. None keeps --log-level"
    )
    loggers: dict[str, LogLevel] = Field(
        default_factory=dict, description="Levels of single loggers, e.g. {edge_runtime.capture.mqtt: DEBUG}"
    )


class Config(_Strict):
    """Everything ``edge-runtime run`` needs."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    profile: Optional[str] = Field(None, description="Device profile name; None detects the board")
    store: Optional[Path] = Field(None, description="Model store directory; None uses the store's default")
    window_s: float = Field(10.0, gt=0, description="Length of one aggregation window in seconds of source time")
    stats_interval_s: float = Field(10.0, gt=0, description="Seconds of wall time between two stats messages")
    min_track_frames: int = Field(
        1, ge=1, description="Frames a track needs within a window to be listed in the faces message"
    )
    detection_interval: Optional[int] = Field(
        None,
        ge=1,
        description=(
            "Run the full face detector on every N-th analyzed frame and track the faces in between "
            "(MTCNN: O-Net alone); None takes the device profile's detection_interval, else 1"
        ),
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """Split a broker URL into ``(scheme, host, port)``.

    Raises ValueError naming the URL when the scheme is not mqtt/mqtts,
    the host is missing or the port is invalid.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host; write it as mqtt://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r} must not have a path or query; write it as mqtt://HOST:PORT")
    if parts.username or parts.password:
        raise ValueError(f"broker URL {url!r} contains credentials; set mqtt.username and mqtt.password_file instead")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        # urlsplit rejects a port that is not a number or above 65535; 0 and an empty port are not usable either.
        raise ValueError(
            f"broker URL {url!r} has an invalid port; give a port from 1 to 65535, e.g. "
            f"{parts.scheme}://{parts.hostname}:{DEFAULT_PORTS[parts.scheme]}, or leave it out for the default "
            f"{DEFAULT_PORTS[parts.scheme]}"
        )
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def device_id_from_hostname(hostname: str) -> str:
    """Turn a host name into a valid device id (letters, digits, ``_.-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname).strip("-._")[:64]
    return cleaned or "device"


def parse_config(data: Any, source_name: str = "<config>", text: Optional[str] = None) -> Config:
    """Validate already-parsed YAML data into a Config.

    ``text`` is the YAML source; when given, errors carry the line of the
    offending key. Raises ConfigError naming each invalid key.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source_name}: the top level must be a mapping of keys, not {type(data).__name__}")

    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        root = compose(text) if text is not None else None
        described = [_describe_error(error, source_name, root) for error in exc.errors()]

        # Errors without a line (flags, defaults) go last.
        described.sort(key=lambda item: (item[0] is None, item[0] or 0))
        lines = [message for _, message in described]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(
    path: Union[str, Path],
    *,
    environ: Optional[Mapping[str, str]] = None,
    credentials_directory: Union[str, Path, None] = None,
    missing_hint: str = "pass an existing file to --config",
) -> Config:
    """Read a YAML configuration file, substitute its ``${...}`` expressions and validate it.

    ``environ`` (default ``os.environ``) and ``credentials_directory``
    (default ``$CREDENTIALS_DIRECTORY``) feed the substitution described in
    ``edge_runtime.substitution``. Raises ConfigError when the file is
    missing, is not valid YAML, names an unset variable or a missing
    credential, or has an invalid or unknown key. The message names the
    file, the line and the key. A plain-text ``mqtt.password`` is accepted
    with a warning that never contains the password. ``missing_hint`` ends
    the message of a missing file; callers without --config pass their own.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; {missing_hint}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None

    try:
        document = load_yaml(text, str(path), environ=environ, credentials_directory=credentials_directory)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None

    config = parse_config(document.data, str(path), text)
    if config.mqtt.password is not None and "mqtt.password" not in document.substituted_keys:
        line = line_of(compose(text), ["mqtt", "password"])
        logger.warning(
            "%s:%s: mqtt.password contains the broker password in plain text; move it into "
            "/etc/edge-runtime/credentials/mqtt-password and set password_file: ${credential:mqtt-password}, "
            "or point password_file at a file readable only by the service",
            path,
            line if line is not None else "?",
        )
    logger.debug("loaded config %s", path)
    return config


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Return a copy of ``config`` with dotted keys replaced, e.g. ``{"mqtt.broker": URL}``.

    ``None`` values are skipped, so unset command-line flags keep the file's
    values. Raises ConfigError naming the key when a value is invalid.
    """
    data = config.model_dump(exclude_unset=True)
    changed = False
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        changed = True

    if not changed:
        return config
    return parse_config(data, "command line")


# Pydantic's bound errors: (("small"/"large", the comparison the value must meet), the context key of the bound).
LIMIT_ERRORS = {
    "greater_than_equal": (("small", ">="), "ge"),
    "greater_than": (("small", ">"), "gt"),
    "less_than_equal": (("large", "<="), "le"),
    "less_than": (("large", "<"), "lt"),
    "string_too_short": (("short", "of length >="), "min_length"),
    "too_short": (("short", "of length >="), "min_length"),
}


def _describe_error(error: Mapping[str, Any], source_name: str, root: Optional[yaml.Node]) -> tuple[Optional[int], str]:
    """Return the line of one pydantic error and its message: file, line, dotted key, the bad value and the fix."""
    location = [part for part in error["loc"] if not _is_union_tag(part)]
    key = ".".join(str(part) for part in location) or "(top level)"
    line = line_of(root, location)
    where = f"{source_name}:{line}" if line is not None else source_name
    return line, f"{where}: {key}: {_explain(error, location)}"


def _explain(error: Mapping[str, Any], location: list[Any]) -> str:
    """Return what is wrong with the value of one pydantic error and how to fix it, without pydantic's wording."""
    kind = error["type"]
    context = error.get("ctx") or {}
    value_text = _show(error.get("input"))

    if kind == "extra_forbidden":
        return _unknown_key(location)
    if kind == "value_error" and "error" in context:
        # The validators' own messages, without pydantic's "Value error, " prefix.
        return str(context["error"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _expected_mapping(error.get("input"), location)
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{value_text} is not an integer; write a whole number without quotes"
    if kind in ("float_parsing", "float_type"):
        return f"{value_text} is not a number; write a number without quotes or units, e.g. 2.5"
    if kind in ("bool_parsing", "bool_type"):
        return f"{value_text} is not a boolean; write true or false"
    if kind == "string_type":
        return f"{value_text} is not a string; put the value in quotes"
    if kind == "list_type":
        return f"{value_text} is not a list; write the items as [a, b] or one '- item' per line"
    if kind == "literal_error":
        return f"{value_text} is not one of {context.get('expected')}; use one of those values"
    if kind == "missing":
        return "required key is missing; add it"
    if kind in LIMIT_ERRORS:
        relation, bound_key = LIMIT_ERRORS[kind]
        return f"{value_text} is too {relation[0]}; give a value {relation[1]} {context.get(bound_key)}"
    return f"{error['msg']} (got {value_text})"


def _show(value: Any) -> str:
    """Return ``value`` as YAML spells it, cut to 60 characters."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(location: list[Any]) -> str:
    """Return the message for an unknown key, with the closest allowed key when one is close."""
    allowed = _allowed_keys(location[:-1])
    close = difflib.get_close_matches(str(location[-1]), allowed, n=1, cutoff=0.6) if location else []
    if close:
        return f"unknown key; did you mean `{close[0]}`? `edge-runtime config schema` prints every key"
    if allowed:
        return (
            f"unknown key; the keys here are {', '.join(allowed)}. `edge-runtime config schema` prints every key"
        )
    return "unknown key; `edge-runtime config schema` prints every key"


def _expected_mapping(value: Any, location: list[Any]) -> str:
    """Return the message for a single value given where a mapping of keys belongs, with the expected form."""
    name = str(location[-1]) if location else "(top level)"
    allowed = _allowed_keys(location)
    if not allowed:
        return f"{_show(value)} is not a mapping; write it as {name}: {{KEY: VALUE}}"

    model = _model_at(location)
    first = allowed[0]
    takes_text = model is not None and model.model_fields[first].annotation is str
    example = f'"{value}"' if takes_text and not isinstance(value, (Mapping, list)) else _show(value)
    return (
        f"{_show(value)} is a single value, but {name} takes a mapping with the keys {', '.join(allowed)}; "
        f"write it as {name}: {{{first}: {example}}}"
    )


def _allowed_keys(location: list[Any]) -> list[str]:
    model = _model_at(location)
    return list(model.model_fields) if model is not None else []


def _model_at(location: list[Any]) -> Optional[type[BaseModel]]:
    """Return the model class that validates the mapping at ``location``, or None for a plain value or dict."""
    model: Optional[type[BaseModel]] = Config
    for part in location:
        if model is None or str(part) not in model.model_fields:
            return None
        model = _model_in(model.model_fields[str(part)].annotation)
    return model


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    """Return the model class inside an annotation such as ``Optional[Annotated[Union[Model, ...], ...]]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _is_union_tag(part: Any) -> bool:
    # Pydantic puts the union member it tried into the location, e.g.
    # ('models', 'emotion', 'ModelChoice', 'name'), and '[key]' for an invalid
    # dict key; those are not YAML keys.
    return isinstance(part, str) and (part[:1].isupper() or part.startswith("literal[") or part == "[key]")
