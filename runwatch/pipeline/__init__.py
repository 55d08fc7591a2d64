"""The event pipeline: bounded buffers, the thread bridge, config and runtime."""

from __future__ import annotations

from .buffer import BufferStatistics as BufferStatistics
from .buffer import EventBuffer as EventBuffer
from .buffer import FlushMarker as FlushMarker
from .buffer import OverflowPolicy as OverflowPolicy
from .component import Component as Component
from .component import ComponentContext as ComponentContext
from .component import Options as Options
from .component import Output as Output
from .component import Sink as Sink
from .component import Source as Source
from .component import Stage as Stage
from .config import PipelineSpec as PipelineSpec
from .config import default_pipeline_config as default_pipeline_config
from .config import load_pipeline_config as load_pipeline_config
from .runtime import Pipeline as Pipeline

__all__ = [
    "BufferStatistics",
    "Component",
    "ComponentContext",
    "EventBuffer",
    "FlushMarker",
    "Options",
    "Output",
    "OverflowPolicy",
    "Pipeline",
    "PipelineSpec",
    "Sink",
    "Source",
    "Stage",
    "default_pipeline_config",
    "load_pipeline_config",
]
