"""What the router routes with: the artifact and the policy built from it, loaded and checked together.

Start-up (router/app.py) and reload (``Triage.reload``) both call ``Routing.load``; a reload swaps the whole
``Routing`` in one assignment, so a request sees the old artifact and policy or the new ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from router.artifact import Artifact, ArtifactError
from router.embedding import TextEncoder, identity
from router.policy import Policy


class Routing:
    """The artifact, its policy, and the refine embedder its refine tier asks for (None without a tier, unless one
    was given)."""

    def __init__(self, artifact: Artifact, refine_encoder: TextEncoder | None = None) -> None:
        self.artifact = artifact
        self.policy = Policy(artifact)
        self.refine_encoder = refine_encoder

    @classmethod
    def load(cls, path: str | Path, encoder: TextEncoder, refine: TextEncoder | None = None,
             load_refine: Callable[[], TextEncoder] | None = None) -> Routing:
        """Read and validate the artifact at ``path`` for ``encoder`` (name, dimension, quantised weights) and
        build its policy. An artifact with a refine tier needs ``refine``, or ``load_refine`` to make it (at
        start-up; a running router cannot load another model, so a reload passes none); ArtifactError where the
        tier's embedder is not the one there is."""
        artifact = Artifact.from_dir(path, **identity(encoder))
        tier = artifact.refine
        if tier is not None and refine is None and load_refine is not None:
            refine = load_refine()
        if tier is not None and (refine is None or (refine.name, refine.dim) != (tier.embedder_name,
                                                                                   tier.embedder_dim)):
            raise ArtifactError(
                f"the artifact's refine tier needs {tier.embedder_name!r} ({tier.embedder_dim} dims); this router "
                f"has {'no refine embedder' if refine is None else repr(refine.name)}: restart it to load the "
                "artifact")
        return cls(artifact, refine)
