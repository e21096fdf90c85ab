"""Register a validated result as a versioned LaminDB artifact with its lineage and labels."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cellquery.spec import ONTOLOGY_COLUMNS, ULABEL_COLUMNS, QuerySpec, SpecError

log = logging.getLogger(__name__)

WORKFLOW_KEY = "cellquery"
REGISTER_KEY = "cellquery/register"
RESULT_FEATURES = {"spec_digest": str, "query_name": str}


def _transform(ln, key: str, description: str):
    existing = ln.Transform.filter(key=key).first()
    return existing or ln.Transform(key=key, kind="pipeline", description=description).save()


def _feature(ln, name: str, dtype):
    return ln.Feature.filter(name=name).first() or ln.Feature(name=name, dtype=dtype).save()


def _link_labels(ln, artifact, obs: pd.DataFrame, organism: str) -> None:
    """Link the result to the ontology terms and labels its cells carry, as curated datasets are."""
    import bionty as bt

    for id_column, registry_name, link in ONTOLOGY_COLUMNS.values():
        if id_column in obs.columns:
            ids = set(obs[id_column].astype(str))
            records = getattr(bt, registry_name).filter(ontology_id__in=ids)
            if records.exists():
                getattr(artifact, link).add(*records)
    for column, type_name in ULABEL_COLUMNS.items():
        if column in obs.columns:
            labels = ln.ULabel.filter(type__name=type_name, name__in=set(obs[column].astype(str)))
            if labels.exists():
                artifact.ulabels.add(*labels)
    species = bt.Organism.filter(ontology_id=organism)
    if species.exists():
        artifact.organisms.add(*species)


def check_output_key(ln, spec: QuerySpec) -> None:
    """The output key must be free or hold earlier versions of a cellquery result, never another artifact."""
    for artifact in ln.Artifact.filter(key=spec.output_key).select_related("run__transform"):
        if artifact.run is None or artifact.run.transform.key != REGISTER_KEY:
            raise SpecError(
                f"output.key: {spec.output_key!r} belongs to artifact {artifact.uid}, "
                "which is not a cellquery result; choose another key"
            )


def register_result(ln, spec: QuerySpec, result_path: Path, manifest: pd.DataFrame, census_uid: str) -> dict:
    """Save the result under the spec's output key: identical content reuses the existing artifact."""
    import anndata as ad

    result = ad.read_h5ad(result_path, backed="r")
    obs, shape = result.obs, result.shape
    inputs = [*manifest["uid"], census_uid]
    candidate = ln.Artifact(
        str(result_path), key=spec.output_key, description=f"cellquery result {spec.name}"
    )
    reused = candidate.id is not None  # lamindb returned the record with this content
    if reused:
        artifact = candidate
        log.info("identical result already registered as %s", artifact.uid)
    else:
        workflow = _transform(ln, WORKFLOW_KEY, "cellquery Snakemake workflow")
        parent = ln.Run(workflow, params={"spec": spec.data, "spec_digest": spec.digest}).save()
        run = ln.Run(
            _transform(ln, REGISTER_KEY, "cellquery: register a validated result"),
            params={"spec_digest": spec.digest, "query": spec.name},
            initiated_by_run=parent,
        ).save()
        run.input_artifacts.add(*ln.Artifact.filter(uid__in=inputs))
        previous = ln.Artifact.filter(key=spec.output_key).count()
        candidate.run = run
        candidate.version_tag = str(previous + 1)
        candidate.n_observations = shape[0]
        artifact = candidate.save()
        _link_labels(ln, artifact, obs, spec.organism)
        for name, dtype in RESULT_FEATURES.items():
            _feature(ln, name, dtype)
        artifact.features.add_values({"spec_digest": spec.digest, "query_name": spec.name})
        log.info("registered %s version %s", artifact.uid, artifact.version_tag)
    return {
        "artifact_uid": artifact.uid,
        "key": artifact.key,
        "version": artifact.version_tag,
        "hash": artifact.hash,
        "n_obs": shape[0],
        "n_vars": shape[1],
        "spec_digest": spec.digest,
        "inputs": inputs,
        "run_uid": artifact.run.uid if artifact.run else None,
        "reused": reused,
        "path": str(artifact.path),
    }
