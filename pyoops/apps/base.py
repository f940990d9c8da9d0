"""Application base class and the shared pieces of application configs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Union

from pydantic import Field, create_model
from pydantic.json_schema import GenerateJsonSchema

from pyoops.config.parameters import Parameters, validate
from pyoops.config.yaml_io import ConfigDocument, require_mapping
from pyoops.apps.files import check_declared_files
from pyoops.registry import ModelPlugin, Registry
from pyoops.util.atomic import OutputSession
from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError, join_path

__all__ = ["Application", "ApplicationParameters", "specialise"]


class ApplicationParameters(Parameters):
    """Keys every application config has."""

    model_plugin: str = Field(description="Model plugin providing geometry, state and models, e.g. lorenz96.")


def specialise(cls: type[Parameters], name: str, **fields: Any) -> type[Parameters]:
    """A subclass of ``cls`` with some field types replaced (for JSON schemas).

    Each keyword is ``field_name=type``; the field keeps its alias, default and
    description.
    """
    definitions = {}
    for field_name, new_type in fields.items():
        info = cls.model_fields[field_name]
        definitions[field_name] = (new_type, info)
    return create_model(name, __base__=cls, **definitions)


def union_of_parameters(factory: Any, plugin: ModelPlugin | None = None) -> Any:
    """``Union`` of the Parameters classes of the makers in ``factory`` (for schemas).

    With ``plugin``, only the makers registered by that model plugin (and the generic ones).
    """
    entries = factory.entries()
    if plugin is not None:
        own = [e for e in entries if e.plugin in (plugin.plugin, "generic")]
        entries = own or entries
    classes = [e.maker.Parameters for e in entries if hasattr(e.maker, "Parameters")]
    if not classes:
        return dict[str, Any]
    return classes[0] if len(classes) == 1 else Union[tuple(classes)]  # noqa: UP007


class _SchemaGenerator(GenerateJsonSchema):
    """Writes DateTime/Duration defaults as their ISO-8601 strings."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, (DateTime, Duration)):
            return str(dft)
        return super().encode_default(dft)


class Application(ABC):
    """A generic application driven by one YAML file (``pyoops <name> CONFIG``).

    Subclasses declare ``Parameters`` (the top-level schema), implement
    :meth:`validate_plugins` for the plugin-typed sections and :meth:`run`.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Parameters: ClassVar[type[ApplicationParameters]]
    #: Whether the configuration names a model plugin (observation-space applications do not).
    needs_model_plugin: ClassVar[bool] = True

    def __init__(self, registry: Registry):
        self.registry = registry
        self.document: ConfigDocument | None = None

    # Validation ---------------------------------------------------------------------------
    def validate(self, document: ConfigDocument) -> Any:
        """Validate the whole configuration (including plugin sections) without reading data."""
        self.document = document
        params = validate(self.Parameters, document.data)
        self.plugin = self.registry.model_plugin(params.model_plugin) if self.needs_model_plugin else None
        self.validate_plugins(params)
        check_declared_files(params)
        return params

    def execute(self, params: Any) -> dict[str, Any]:
        """:meth:`run` inside an :class:`~pyoops.util.atomic.OutputSession`: all outputs or none.

        On success every output is renamed into place together; on any error the run's
        temporaries are removed and the error carries what was left on disk
        (``error.outputs``: "no output was written", or the files committed at once).
        """
        session = OutputSession()
        try:
            with session:
                return self.run(params)
        except BaseException as exc:
            exc.outputs = session.describe_failure()  # type: ignore[attr-defined]
            raise

    def validate_plugins(self, params: Any) -> None:
        """Validate plugin-typed sections (geometry, model, ...); override in subclasses."""

    def geometry(self, config: Any, path: str = "geometry") -> Any:
        """Build the model plugin's geometry from ``config``."""
        return self.plugin.make_geometry(require_mapping(config, path), path)

    def make(self, kind: str, config: Any, path: str, *args: Any) -> Any:
        """Build a maker of ``kind`` named in ``config`` with validated parameters."""
        factory = self.registry.factory(kind)
        maker = factory.maker_for(config, path)
        return maker(factory.parameters(config, path), *args)

    # Running ------------------------------------------------------------------------------
    @abstractmethod
    def run(self, params: Any) -> dict[str, Any]:
        """Run and return a summary (numbers people look at, output file names)."""

    # JSON schema --------------------------------------------------------------------------
    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        """The Parameters class with plugin-typed sections filled in, for the JSON schema."""
        return self.Parameters

    def json_schema(self, plugin: ModelPlugin | None = None) -> dict[str, Any]:
        schema = self.schema_parameters(plugin).model_json_schema(by_alias=True, schema_generator=_SchemaGenerator)
        schema["title"] = f"pyoops {self.name} configuration"
        return schema

    def geometry_schema_type(self, plugin: ModelPlugin | None) -> Any:
        if plugin is not None:
            return plugin.geometry.Parameters
        classes = [p.geometry.Parameters for p in self.registry.model_plugins.values()]
        if not classes:
            return dict[str, Any]
        return classes[0] if len(classes) == 1 else Union[tuple(classes)]  # noqa: UP007


def check_state_in_window(date: Any, window: TimeWindow, path: str) -> None:
    """A ConfigError unless ``date`` lies in ``[begin, end]`` of ``window``."""
    if not (window.begin <= date <= window.end):
        raise ConfigError(f"date {date} is outside the time window {window}", join_path(path, "date"))
