"""The app's screens; each loads its data through tui.service in worker threads."""

from .detail import TargetDetailScreen
from .embeddings import EmbeddingsScreen
from .help import HelpScreen
from .leakage import LeakageScreen
from .message import MessageScreen
from .overview import OverviewScreen
from .sql import SqlScreen
from .targets import TargetsScreen

__all__ = [
    "EmbeddingsScreen",
    "HelpScreen",
    "LeakageScreen",
    "MessageScreen",
    "OverviewScreen",
    "SqlScreen",
    "TargetDetailScreen",
    "TargetsScreen",
]
