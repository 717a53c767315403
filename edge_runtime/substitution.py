"""``${...}`` substitution in the values of a YAML configuration file.

Forms, replaced inside any string value (never in keys or comments):

- ``${NAME}``: the environment variable NAME; an error when it is unset.
- ``${NAME:-default}``: NAME, or ``default`` when NAME is unset or empty.
- ``${credential:ID}``: the path of the systemd credential ID, that is
  ``$CREDENTIALS_DIRECTORY/ID``, which systemd fills from ``LoadCredential=``.
  The path (not the secret) goes into the configuration, so it fits keys
  that take a file (``mqtt.password_file``, ``mqtt.tls.key_file``) and the
  secret itself never enters the parsed configuration or a log line.
- ``$$``: a literal ``$``.

Substitution works on the parsed YAML nodes, so a value with ``:``, ``#``
or quotes cannot change the structure of the document. A plain (unquoted)
scalar is typed again after substitution, so ``${WINDOW:-10}`` becomes the
number 10 and ``${ENABLED:-false}`` a boolean. Errors name the variable or
credential and the line. Every failing expression of a document is
reported in one ConfigError, so a file with several unset variables is
fixed in one pass.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from edge_runtime.errors import ConfigError

EXPRESSION = re.compile(r"\$\$|\$\{([^}]*)\}")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# systemd credential ids are file names; the same rule keeps '/' and '..' out of the path.
CREDENTIAL_ID = re.compile(r"[A-Za-z0-9_.@-]{1,255}")
CREDENTIAL_PREFIX = "credential:"
STRING_TAG = "tag:yaml.org,2002:str"


@dataclass
class SubstitutedDocument:
    """The constructed YAML data and the dotted keys whose values contained a ``${...}`` expression."""

    data: Any
    substituted_keys: set[str] = field(default_factory=set)


def load_yaml(
    text: str,
    source_name: str,
    *,
    environ: Optional[Mapping[str, str]] = None,
    credentials_directory: Union[str, Path, None] = None,
) -> SubstitutedDocument:
    """Parse YAML ``text`` and substitute every ``${...}`` expression in its string values.

    ``environ`` defaults to ``os.environ``. ``credentials_directory``
    defaults to ``$CREDENTIALS_DIRECTORY``. Raises one ConfigError listing
    every expression that failed, each with ``source_name``, the line and
    the variable or credential at fault; ``yaml.YAMLError`` for invalid YAML
    is left to the caller.
    """
    environ = os.environ if environ is None else environ
    if credentials_directory is None:
        credentials_directory = environ.get("CREDENTIALS_DIRECTORY") or None

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return SubstitutedDocument(None)
        substituted: set[str] = set()
        context = _Context(source_name, environ, credentials_directory)
        _walk(root, [], loader, context, substituted, set())

        if len(context.errors) == 1:
            raise ConfigError(context.errors[0])
        if context.errors:
            raise ConfigError(
                f"{len(context.errors)} substitutions failed:\n  " + "\n  ".join(context.errors)
            )
        return SubstitutedDocument(loader.construct_document(root), substituted)
    finally:
        loader.dispose()


@dataclass(frozen=True)
class _Context:
    source_name: str
    environ: Mapping[str, str]
    credentials_directory: Union[str, Path, None]
    # Messages of the expressions that failed, in document order.
    errors: list[str] = field(default_factory=list)


def _walk(
    node: yaml.Node, path: list[str], loader: yaml.SafeLoader, context: _Context, substituted: set[str], seen: set[int]
) -> None:
    # An alias points at a node already walked; substituting it twice would
    # turn "$$" into "$" and then read the "$" again.
    if id(node) in seen:
        return
    seen.add(id(node))

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _walk(value_node, [*path, str(key_node.value)], loader, context, substituted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, [*path, str(index)], loader, context, substituted, seen)
    elif isinstance(node, yaml.ScalarNode) and node.tag == STRING_TAG and "$" in node.value:
        where = f"{context.source_name}:{node.start_mark.line + 1}: {'.'.join(path) or '(top level)'}"
        value, had_expression = substitute(node.value, context, where)
        if had_expression:
            substituted.add(".".join(path))
        node.value = value
        if node.style is None:
            node.tag = loader.resolve(yaml.ScalarNode, value, (True, False))


def substitute(text: str, context: _Context, where: str) -> tuple[str, bool]:
    """Return ``text`` with its expressions replaced, and whether it had any ``${...}``.

    A failing expression adds its message to ``context.errors`` and is
    replaced by an empty string, so the walk goes on to the next one.
    """
    found = False

    def replace(match: re.Match) -> str:
        nonlocal found
        if match.group(0) == "$$":
            return "$"
        found = True
        expression = match.group(1)
        try:
            if expression.startswith(CREDENTIAL_PREFIX):
                return credential_path(expression[len(CREDENTIAL_PREFIX):], context.credentials_directory, where)
            return _variable(expression, context.environ, where)
        except ConfigError as exc:
            context.errors.append(str(exc))
            return 

    return EXPRESSION.sub(replace, text), found


def _variable(expression: str, environ: Mapping[str, str], where: str) -> str:
    name, separator, default = expression.partition(":-")
    if not VARIABLE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: '${{{expression}}}' is not a valid substitution; write ${{NAME}}, ${{NAME:-default}} "
            "or ${credential:ID} (use $$ for a literal $)"
        )

    value = environ.get(name)
    if separator:
        return value if value else default
    if value is None:
        raise ConfigError(
            f"{where}: environment variable {name} is not set; set it (e.g. Environment={name}=... in a "
            f"drop-in of the unit) or give a default with ${{{name}:-default}}"
        )
    return value


def credential_path(credential_id: str, directory: Union[str, Path, None], where: str) -> str:
    """Return the path of a systemd credential after checking that the file exists and is not blank.

    Blank means empty or only whitespace, which is what the unit's
    SetCredential= fallback passes when the source file is missing.
    """
    if not CREDENTIAL_ID.fullmatch(credential_id) or credential_id in (".", ".."):
        raise ConfigError(
            f"{where}: credential id {credential_id!r} is invalid; use letters, digits, '_', '.', '@' or '-'"
        )
    if directory is None:
        raise ConfigError(
            f"{where}: credential {credential_id} is unavailable because CREDENTIALS_DIRECTORY is not set; "
            f"systemd sets it for a unit with LoadCredential={credential_id}:PATH. Outside systemd, set "
            "CREDENTIALS_DIRECTORY to a directory holding the file, or pass --credentials-directory"
        )

    path = Path(directory) / credential_id
    try:
        # Read to tell a blank credential from a real one; the content never leaves this function.
        blank = not path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: credential {credential_id} not found in {directory}; add "
            f"LoadCredential={credential_id}:PATH to the unit or create {path}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: credential {credential_id} in {directory} cannot be read: {exc.strerror}") from None
    if blank:
        raise ConfigError(
            f"{where}: credential {credential_id} is blank. The unit passes a blank one when its source "
            f"file /etc/edge-runtime/credentials/{credential_id} is missing; put the secret there and "
            "restart the service"
        )
    return str(path)
