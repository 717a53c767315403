"""Configuration of the capture service (``edge-runtime run``).

The configuration is a YAML file validated by the pydantic models below.
Unknown keys are rejected, so a misspelt key fails at start instead of being
ignored. Command-line flags override the file for the common cases through
``apply_overrides``. ``examples/config.yaml`` documents every key.
"""

from __future__ import annotations

import logging
import re
import socket
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
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r} has an invalid port: {exc}") from None
    return parts.scheme, parts.hostname, port


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
        root = _compose(text) if text is not None else None
        lines = [_describe_error(error, source_name, root) for error in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(
    path: Union[str, Path],
    *,
    environ: Optional[Mapping[str, str]] = None,
    credentials_directory: Union[str, Path, None] = None,
) -> Config:
    """Read a YAML configuration file, substitute its ``${...}`` expressions and validate it.

    ``environ`` (default ``os.environ``) and ``credentials_directory``
    (default ``$CREDENTIALS_DIRECTORY``) feed the substitution described in
    ``edge_runtime.substitution``. Raises ConfigError when the file is
    missing, is not valid YAML, names an unset variable or a missing
    credential, or has an invalid or unknown key. The message names the
    file, the line and the key. A plain-text ``mqtt.password`` is accepted
    with a warning that never contains the password.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass an existing file to --config") from None
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
        line = _line_of(_compose(text), ["mqtt", "password"])
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


def _compose(text: str) -> Optional[yaml.Node]:
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


def _describe_error(error: Mapping[str, Any], source_name: str, root: Optional[yaml.Node]) -> str:
    location = [part for part in error["loc"] if not _is_union_tag(part)]
    key = ".".join(str(part) for part in location) or "(top level)"
    line = _line_of(root, location)
    where = f"{source_name}:{line}" if line is not None else source_name
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key; check its spelling against examples/config.yaml"
    elif error["type"] == "value_error" and "error" in error.get("ctx", {}):
        # The validators' own messages, without pydantic's "Value error, " prefix.
        message = str(error["ctx"]["error"])
    return f"{where}: {key}: {message}"


def _is_union_tag(part: Any) -> bool:
    # Pydantic puts the union member it tried into the location, e.g.
    # ('models', 'emotion', 'ModelChoice', 'name'); those are not YAML keys.
    return isinstance(part, str) and (part[:1].isupper() or part.startswith("literal["))


def _line_of(root: Optional[yaml.Node], location: list[Any]) -> Optional[int]:
    """Return the 1-based line of the deepest YAML node on ``location``."""
    if root is None:
        return None

    node = root
    line = None
    for part in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
