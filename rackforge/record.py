"""Dataclasses stored as JSON values in the registry (nodes, roles, tokens)."""

import dataclasses
import json


class JsonRecord:
    """Mixin for a dataclass kept as one JSON value.

    Reading ignores keys this version does not know, so a record written by a
    newer rackforge still loads.  Fields listed in ``_not_stored`` are left out.
    """

    _not_stored = ()

    def to_json(self):
        data = dataclasses.asdict(self)
        for name in self._not_stored:
            data.pop(name, None)
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_value(cls, value):
        data = json.loads(value)
        known = {f.name for f in dataclasses.fields(cls)} - set(cls._not_stored)
        return cls(**{k: v for k, v in data.items() if k in known})
