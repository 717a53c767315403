"""Line numbers of keys in a YAML document, for error messages that point at the offending line."""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import yaml

logger = logging.getLogger(__name__)


def compose(text: str) -> Optional[yaml.Node]:
    """Return the node tree of YAML ``text``, or None when the text is not valid YAML."""
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


def line_of(root: Optional[yaml.Node], location: Sequence[Any]) -> Optional[int]:
    """Return the 1-based line of the deepest YAML node on ``location``, a sequence of keys and list indexes.

    Returns None when ``root`` is None or the first key is not in the document.
    """
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
