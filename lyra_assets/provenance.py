"""Where an output came from: one typed record, saved with the walkthrough, the manifest and the GLB extras.

It holds the job spec's record (so `lyra-assets build --from-manifest` can make the same asset again, with
the same key) and what the generator says of itself (its version and its weights' licence).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from . import __version__
from .errors import LyraAssetsError
from .job import JobSpec


@dataclass(frozen=True)
class Provenance:
    job_key: str
    tool: str  # "lyra-assets <version>"
    generator: str
    generator_version: str
    licence: str  # of the generator's model weights
    preset: str
    job: dict[str, Any]  # JobSpec.to_record()

    @classmethod
    def of(cls, spec: JobSpec, licence: str) -> Provenance:
        return cls(spec.key, f"lyra-assets {__version__}", spec.generator, __version__, licence, spec.preset.name,
                   spec.to_record())

    def respecified(self, spec: JobSpec) -> Provenance:
        """The same walkthrough made into an asset under other settings (`mesh` with new asset options)."""
        return Provenance(spec.key, self.tool, self.generator, self.generator_version, self.licence, self.preset,
                          spec.to_record())

    def spec(self, options: dict[str, Any] | None = None) -> JobSpec:
        return JobSpec.from_record(self.job, options, source=f"the recorded job {self.job_key}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> Provenance:
        try:
            return cls(**data)
        except TypeError as exc:
            raise LyraAssetsError(f"{source}: no valid provenance record ({exc}); was it made by lyra-assets "
                                  f"{__version__} or later?") from exc

    def extras(self) -> dict[str, Any]:
        """The short form carried in the GLB's extras and a USD's customData."""
        return {"generator": self.generator, "generator_version": self.generator_version,
                "model_licence": self.licence, "preset": self.preset, "job_key": self.job_key, "tool": self.tool}
