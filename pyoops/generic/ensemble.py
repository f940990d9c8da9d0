"""Reading ensembles: members listed one by one or from a file-name template.

``members from template`` follows OOPS/SABER::

    ensemble:
      members from template:
        template: {date: 2010-01-01T00:00:00Z, filename: data/ens.%mem%.nc}
        pattern: "%mem%"
        nmembers: 10
        zero padding: 3      # %mem% -> 001, 002, ...
        start: 1

Members are returned stacked as one FieldSet with a leading member axis.

4-D members (4D-Ens-Var) list one state per sub-window time, as OOPS's ``State4D``::

    ensemble:
      members from template:
        template:
          states:
          - {date: 2010-01-01T21:00:00Z, filename: data/ens.%mem%.2010-01-01T21.nc}
          - {date: 2010-01-02T00:00:00Z, filename: data/ens.%mem%.2010-01-02T00.nc}
        pattern: "%mem%"
        nmembers: 10

and are returned with axes ``(member, time, *grid)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from pyoops.config.parameters import DateTimeField, Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, InputFileError, join_path
from pyoops.util.resources import format_bytes, require_memory
from pyoops.util.variables import Variables

__all__ = ["EnsembleSourceParameters", "MemberParameters", "MembersFromTemplate", "member_count", "member_count_path",
           "member_filenames", "member_labels", "read_ensemble"]


class MemberParameters(Parameters):
    """One member file (the date defaults to the valid time of the covariance), or a 4-D member."""

    filename: str | None = Field(None, description="State file in the documented layout.")
    date: DateTimeField | None = Field(None, description="Valid time (default: the analysis time).")
    member: int | None = Field(None, ge=0, description="Member index inside an ensemble file.")
    states: list["MemberParameters"] | None = Field(
        None, min_length=1, description="4-D member: one state per time, in time order (instead of filename).")

    @model_validator(mode="after")
    def _file_or_states(self) -> "MemberParameters":
        if (self.filename is None) == (self.states is None):
            raise ValueError("give exactly one of 'filename' and 'states'")
        if self.states is not None and any(st.states is not None for st in self.states):
            raise ValueError("the states of a 4-D member cannot have 'states' themselves")
        return self

    def filenames(self) -> list[str]:
        """The file of a member, or the files of its states."""
        return [self.filename] if self.filename is not None else [st.filename for st in self.states or []]

    def with_pattern(self, pattern: str, value: str) -> "MemberParameters":
        """A copy with ``pattern`` replaced by ``value`` in every file name."""
        if self.states is not None:
            return self.model_copy(update={"states": [st.with_pattern(pattern, value) for st in self.states]})
        return self.model_copy(update={"filename": str(self.filename).replace(pattern, value)})


MemberParameters.model_rebuild()


class MembersFromTemplate(Parameters):
    template: MemberParameters = Field(description="A member whose filename contains the pattern.")
    pattern: str = Field("%mem%", min_length=1, description="Text replaced by the member number.")
    nmembers: int = Field(gt=0, description="Number of members.")
    zero_padding: int = Field(0, ge=0, description="Width of the zero-padded member number.")
    start: int = Field(1, ge=0, description="Number of the first member.")

    @model_validator(mode="after")
    def _pattern_in_filename(self) -> "MembersFromTemplate":
        for name in self.template.filenames():
            if self.pattern not in name:
                raise ValueError(f"the template filename {name!r} does not contain the pattern {self.pattern!r}")
        return self


class EnsembleSourceParameters(Parameters):
    """``members: [...]`` or ``members from template: {...}``, or one file with a member dimension."""

    members: list[MemberParameters] | None = Field(None, description="Member files, one by one.")
    members_from_template: MembersFromTemplate | None = Field(None, description="Member files from a template.")
    filename: str | None = Field(None, description="One file holding every member along a 'member' dimension.")
    date: DateTimeField | None = Field(None, description="Valid time of 'filename' (default: the analysis time).")

    @model_validator(mode="after")
    def _one_source(self) -> "EnsembleSourceParameters":
        given = [k for k in ("members", "members_from_template", "filename") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'members', 'members from template' and 'filename'")
        return self


def member_count(source: EnsembleSourceParameters) -> int | None:
    """Number of members a source declares (None for an ensemble file, known only when read)."""
    if source.members is not None:
        return len(source.members)
    if source.members_from_template is not None:
        return source.members_from_template.nmembers
    return None


def member_labels(source: EnsembleSourceParameters, nmembers: int) -> list[str]:
    """Numbers that replace ``%mem%`` in output names: as the input template numbered them, else 1..N."""
    t = source.members_from_template
    if t is not None:
        return [str(k).zfill(t.zero_padding) if t.zero_padding else str(k) for k in range(t.start, t.start + nmembers)]
    return [str(k) for k in range(1, nmembers + 1)]


def member_count_path(source: EnsembleSourceParameters, path: str) -> str:
    """The YAML key that sets the number of members of ``source``."""
    if source.members_from_template is not None:
        return join_path(path, "members from template.nmembers")
    return join_path(path, "members" if source.members is not None else "filename")


def member_filenames(source: EnsembleSourceParameters) -> list[MemberParameters]:
    """The member entries of a source (templates expanded)."""
    if source.members is not None:
        return list(source.members)
    t = source.members_from_template
    if t is None:
        return []
    out = []
    for k in range(t.start, t.start + t.nmembers):
        number = str(k).zfill(t.zero_padding) if t.zero_padding else str(k)
        out.append(t.template.with_pattern(t.pattern, number))
    return out


def read_ensemble(source: EnsembleSourceParameters, geometry: Any, variables: Variables,
                  time: DateTime | None, path: str = "ensemble") -> FieldSet:
    """Read every member of ``source`` into one FieldSet with a leading member axis."""
    variables = Variables(variables)
    if source.filename is not None:
        fields, _ = read_fields(source.filename, geometry, variables, source.date or time, allow_members=True)
        nmem = next(iter(fields.values())).ndim - len(geometry.field_shape(variables[0]))
        if nmem != 1:
            raise InputFileError(source.filename, "expected a 'member' dimension in an ensemble file")
        members = fields
    else:
        entries = member_filenames(source)
        four_d = [e.states is not None for e in entries]
        if any(four_d) and not all(four_d):
            raise ConfigError("either every member or none has 'states' (4-D members)", path)
        if all(four_d) and entries and len({len(e.states or []) for e in entries}) != 1:
            raise ConfigError("every 4-D member needs the same number of states", path)
        nstates = len(entries) * (len(entries[0].states or []) if entries and four_d[0] else 1)
        state_bytes = 8.0 * sum(math.prod(geometry.field_shape(v)) for v in variables)
        require_memory(nstates * state_bytes, f"{nstates} ensemble member state(s) of {format_bytes(state_bytes)}",
                       path)

        def read_one(entry: MemberParameters, where: str, state_of_4d_member: bool) -> FieldSet:
            # A state of a 4-D member has its own time: its 'date', else the file's date attribute.
            date = entry.date if state_of_4d_member else (entry.date or time)
            if date is None and not state_of_4d_member:
                raise ConfigError("member has no date and the covariance has no valid time", where)
            fields, _ = read_fields(entry.filename, geometry, variables, date, member=entry.member)
            return fields

        arrays: dict[str, list[np.ndarray]] = {v: [] for v in variables}
        for i, entry in enumerate(entries):
            if entry.states is not None:
                states = [read_one(st, join_path(path, i, "states", j), True) for j, st in enumerate(entry.states)]
                for v in variables:
                    arrays[v].append(np.stack([st[v] for st in states]))
            else:
                fields = read_one(entry, join_path(path, i), False)
                for v in variables:
                    arrays[v].append(fields[v])
        members = FieldSet({v: np.stack(a) for v, a in arrays.items()}, copy=False)
    nmembers = next(iter(members.values())).shape[0]
    if nmembers < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, got {nmembers}", path)
    return members
