"""What the embedded demo holds: its datasets, per scale, with real ontology terms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from cellquery.cellxgene.release import release_named, releases
from cellquery.spec.genes import schema_major
from cellquery.spec.query_spec import TERM_SEPARATOR

HUMAN, MOUSE, MARMOSET = "NCBITaxon:9606", "NCBITaxon:10090", "NCBITaxon:9483"
V1, V2 = "2025-01-30", "2025-11-08"
# The dataset schema of each release's files, as the release table states it (5.2.0, 7.0.0).
DATASET_SCHEMA = {version: release_named(version).dataset_schema for version in (V1, V2)}
SCALES = ("small", "bench", "registry", "atlas")
CURATORS = ("sunitaj", "falexwolf")  # two users, so `created_by=` queries mean something

# Cell types (CL). Parents and children both occur: T cell with its CD4/CD8 subtypes, B cell and naive B cell.
T_CELL, CD4_T, CD8_T = "CL:0000084", "CL:0000624", "CL:0000625"
B_CELL, NAIVE_B, NK_CELL = "CL:0000236", "CL:0000788", "CL:0000623"
DENDRITIC, NEUTROPHIL, MONOCYTE = "CL:0000451", "CL:0000775", "CL:0000860"
MACROPHAGE, ALV_MACROPHAGE = "CL:0000235", "CL:0000583"
MICROGLIA, NEURON, ASTROCYTE, OLIGODENDROCYTE = (
    "CL:0000129",
    "CL:0000540",
    "CL:0000127",
    "CL:0000128",
)
PROXIMAL_TUBULE, PODOCYTE, PRINCIPAL = "CL:0002306", "CL:0000653", "CL:1001431"
AT2, FIBROBLAST, HEPATOCYTE = "CL:0002063", "CL:0000057", "CL:0000182"

KIDNEY, BRAIN, LUNG, BLOOD = "UBERON:0002113", "UBERON:0000955", "UBERON:0002048", "UBERON:0000178"
LIVER, SPLEEN = "UBERON:0002107", "UBERON:0002106"

TENX_3V2, TENX_3V3, TENX_3V4, TENX_5V1, SMART_SEQ2 = (
    "EFO:0009899",
    "EFO:0009922",
    "EFO:0022604",
    "EFO:0011025",
    "EFO:0008931",
)

NORMAL, COVID, CKD, ALZHEIMER, LUAD = (
    "PATO:0000461",
    "MONDO:0100096",
    "MONDO:0005300",
    "MONDO:0004975",
    "MONDO:0005061",
)
ALZHEIMER_WITH_CKD = TERM_SEPARATOR.join(sorted((ALZHEIMER, CKD)))  # schema 7: a donor's several diseases
SEXES = ("PATO:0000383", "PATO:0000384")
HUMAN_STAGES = ("HsapDv:0000119", "HsapDv:0000139", "HsapDv:0000152", "HsapDv:0000156")
MOUSE_STAGES = ("MmusDv:0000154", "MmusDv:0000158", "MmusDv:0000063")
# Organisms without a stage ontology of their own take UBERON's life stages (schema 7).
LIFE_STAGES = ("UBERON:0034919", "UBERON:0000113", "UBERON:0018241")
STAGES = {HUMAN: HUMAN_STAGES, MOUSE: MOUSE_STAGES}
ETHNICITIES = ("HANCESTRO:0019", "HANCESTRO:0021", "HANCESTRO:0320", "HANCESTRO:0321")

IMMUNE = (T_CELL, CD4_T, CD8_T, B_CELL, NAIVE_B, NK_CELL, MONOCYTE, DENDRITIC)

# Canonical markers per cell type (HGNC symbols): every dataset measures those of its cell types, and they
# carry the cell-type signal of the simulated counts.
MARKERS = {
    T_CELL: ("PTPRC", "CD3E", "CD3D", "CD3G", "CD2", "CD247", "IL7R"),
    CD4_T: ("PTPRC", "CD3E", "CD4", "IL7R", "CCR7", "CD40LG"),
    CD8_T: ("PTPRC", "CD3E", "CD8A", "CD8B", "GZMK", "CCL5"),
    B_CELL: ("PTPRC", "MS4A1", "CD19", "CD79A", "CD79B"),
    NAIVE_B: ("PTPRC", "MS4A1", "CD19", "IGHD", "TCL1A"),
    NK_CELL: ("PTPRC", "NKG7", "GNLY", "KLRD1", "NCAM1", "GZMB", "PRF1", "FCGR3A"),
    MONOCYTE: ("PTPRC", "CD14", "LYZ", "S100A8", "S100A9"),  # classical: CD14 high, FCGR3A (CD16) low
    DENDRITIC: ("PTPRC", "FCER1A", "CD1C", "CLEC10A", "ITGAX", "HLA-DRA"),
    NEUTROPHIL: ("PTPRC", "FCGR3B", "CSF3R", "CXCR2", "S100A8"),
    MACROPHAGE: ("PTPRC", "CD68", "C1QA", "C1QB", "CD163"),
    ALV_MACROPHAGE: ("PTPRC", "MARCO", "CD68", "C1QA", "FABP4"),
    MICROGLIA: ("P2RY12", "CX3CR1", "TMEM119", "AIF1", "CSF1R"),
    NEURON: ("RBFOX3", "SNAP25", "SYT1", "STMN2"),
    ASTROCYTE: ("GFAP", "AQP4", "SLC1A3", "ALDH1L1"),
    OLIGODENDROCYTE: ("MBP", "PLP1", "MOG", "OLIG2"),
    PROXIMAL_TUBULE: ("LRP2", "CUBN", "SLC34A1"),
    PODOCYTE: ("NPHS1", "NPHS2", "PODXL"),
    PRINCIPAL: ("AQP2", "SCNN1G"),
    AT2: ("SFTPC", "SFTPB", "LAMP3", "ABCA3"),
    FIBROBLAST: ("COL1A1", "COL1A2", "DCN", "LUM"),
    HEPATOCYTE: ("ALB", "APOA1", "TTR", "HP"),
}
# Mouse markers are the MGI genes of the same symbol (Cd3e for CD3E), but for these; human-only markers
# (GNLY, TCL1A, CD1C) have no mouse gene of their symbol and are left out for mouse.
MOUSE_MARKER_SYMBOLS = {
    "CD8B": "Cd8b1",
    "LYZ": "Lyz2",
    "FCGR3A": "Fcgr3",
    "FCGR3B": "Fcgr4",
    "HLA-DRA": "H2-Aa",
}
DATASET_NAMESPACE = uuid.UUID("5b1e2a7c-9f0d-4c61-8a35-1d0c6e4b7f20")


@dataclass(frozen=True)
class DatasetSpec:
    """One CELLxGENE-style dataset of the demo; `revision > 1` is a new version of the same key."""

    slug: str
    organism: str
    title: str
    tissue: str
    assay: str
    suspension_type: str
    cell_types: tuple[str, ...]
    diseases: tuple[str, ...]
    n_cells: int
    panel: int  # which gene panel (datasets with different panels make inner and outer joins differ)
    curator: str
    versions: tuple[str, ...]  # collection versions that hold this dataset
    n_donors: int = 4
    primary: bool = True  # False: a re-analysis whose cells are duplicates (is_primary_data False)
    culture_fraction: float = 0.0  # share of cells with tissue_type "primary cell culture"
    spike_ins: bool = False
    revision: int = 1
    n_genes: int = 2000
    listed: bool = True  # the CELLxGENE API lists it when a release is registered: n_observations is set
    curation_fails: bool = False  # registered without label links, as datasets the curator refused
    schema: str = DATASET_SCHEMA[V2]  # the dataset schema its file is written in (`by_generation`)
    # A xenograft (schema 5, the organism per cell): this share of its cells are the host's, on its genes.
    host: str = ""
    host_fraction: float = 0.0
    mixed_ancestry: bool = False  # its last donor states two ethnicities (a joined value)

    @property
    def comorbid(self) -> bool:
        """Whether a donor has several diseases (a joined value, schema 7 only)."""
        return any(TERM_SEPARATOR in disease for disease in self.diseases)

    @property
    def curated(self) -> bool:
        """Whether lamindb's CELLxGENE curator annotates it: ERCC spike-ins are no genes of its source, and a
        joined value (`A || B`, `A,B`) is no term of its ontology."""
        return not (self.curation_fails or self.spike_ins or self.comorbid or self.mixed_ancestry)

    def key(self, version: str) -> str:
        """Where a release holds the dataset, as in the public bucket (the instance's key)."""
        return f"cell-census/{version}/h5ads/{self.dataset_id}.h5ad"

    @property
    def dataset_id(self) -> str:
        return str(uuid.uuid5(DATASET_NAMESPACE, self.slug))

    @property
    def collection_id(self) -> str:
        """The portal collection it was published in."""
        return str(uuid.uuid5(DATASET_NAMESPACE, f"{self.slug}/collection"))

    @property
    def dataset_version_id(self) -> str:
        """New for each revision, and for each schema generation the portal migrated it to."""
        generation = "" if self.schema == DATASET_SCHEMA[V2] else f"/{self.schema}"
        return str(uuid.uuid5(DATASET_NAMESPACE, f"{self.slug}/{self.revision}{generation}"))

    @property
    def content_stem(self) -> str:
        """What its cells and counts are drawn from: the same in every schema generation."""
        return f"{self.slug}-r{self.revision}"

    @property
    def file_stem(self) -> str:
        if self.schema == DATASET_SCHEMA[V2]:
            return self.content_stem
        return f"{self.content_stem}-schema{schema_major(self.schema)}"

    @property
    def description(self) -> str:
        return self.title


def _small() -> list[DatasetSpec]:
    a, b = CURATORS
    both = (V1, V2)
    return [
        DatasetSpec("hs-kidney-immune", HUMAN, "Human kidney immune cells in chronic kidney disease",
                    KIDNEY, TENX_3V2, "cell",
                    (DENDRITIC, NEUTROPHIL, MONOCYTE, T_CELL, PROXIMAL_TUBULE, PODOCYTE),
                    (NORMAL, CKD), 5000, 0, a, (V1,)),
        DatasetSpec("hs-kidney-immune", HUMAN, "Human kidney immune cells in chronic kidney disease",
                    KIDNEY, TENX_3V2, "cell",
                    (DENDRITIC, NEUTROPHIL, MONOCYTE, T_CELL, PROXIMAL_TUBULE, PODOCYTE),
                    (NORMAL, CKD), 5600, 0, a, (V2,), revision=2),
        DatasetSpec("hs-kidney-nuclei", HUMAN, "Single-nucleus atlas of the human kidney",
                    KIDNEY, TENX_3V3, "nucleus",
                    (PROXIMAL_TUBULE, PRINCIPAL, PODOCYTE, DENDRITIC, NEUTROPHIL),
                    (NORMAL, CKD), 4000, 1, b, both),
        DatasetSpec("hs-brain-microglia", HUMAN, "Microglia and neurons of the human cortex",
                    BRAIN, TENX_3V3, "cell", (MICROGLIA, NEURON, ASTROCYTE, OLIGODENDROCYTE),
                    (NORMAL, ALZHEIMER), 5000, 0, b, both, listed=False),
        DatasetSpec("hs-brain-nuclei", HUMAN, "Single-nucleus profiling of Alzheimer disease brain",
                    BRAIN, TENX_3V3, "nucleus", (NEURON, ASTROCYTE, OLIGODENDROCYTE, MICROGLIA),
                    (NORMAL, ALZHEIMER), 4000, 1, a, both),
        DatasetSpec("hs-blood-pbmc", HUMAN, "Blood immune cells in COVID-19",
                    BLOOD, TENX_5V1, "cell", IMMUNE, (NORMAL, COVID), 6000, 0, a, both),
        DatasetSpec("hs-blood-reanalysis", HUMAN, "Integrated immune atlas of blood (re-analysis)",
                    BLOOD, TENX_3V2, "cell", IMMUNE, (NORMAL, COVID), 3000, 1, b, both,
                    primary=False),
        DatasetSpec("hs-lung-atlas", HUMAN, "Human lung cells in adenocarcinoma and COVID-19",
                    LUNG, TENX_3V3, "cell",
                    (AT2, ALV_MACROPHAGE, CD8_T, B_CELL, NEUTROPHIL, FIBROBLAST),
                    (NORMAL, LUAD, COVID), 5000, 0, b, both, culture_fraction=0.04),
        DatasetSpec("hs-lung-smartseq2", HUMAN, "Full-length transcriptomes of lung immune cells",
                    LUNG, SMART_SEQ2, "cell", (ALV_MACROPHAGE, CD4_T, CD8_T, DENDRITIC),
                    (NORMAL,), 800, 1, a, both, n_donors=2, spike_ins=True),
        DatasetSpec("hs-spleen-immune", HUMAN, "Immune cells of the human spleen",
                    SPLEEN, TENX_5V1, "cell", (T_CELL, CD4_T, CD8_T, B_CELL, NAIVE_B, DENDRITIC),
                    (NORMAL,), 3000, 1, b, both, listed=False),
        DatasetSpec("hs-liver", HUMAN, "Hepatocytes and liver macrophages",
                    LIVER, TENX_3V2, "cell", (HEPATOCYTE, MACROPHAGE, T_CELL),
                    (NORMAL,), 3000, 0, a, both),
        DatasetSpec("mm-brain", MOUSE, "Mouse brain glia and neurons",
                    BRAIN, TENX_3V3, "cell", (MICROGLIA, NEURON, ASTROCYTE, OLIGODENDROCYTE),
                    (NORMAL,), 5000, 0, b, both),
        DatasetSpec("mm-kidney", MOUSE, "Mouse kidney epithelium and immune cells",
                    KIDNEY, TENX_3V2, "cell",
                    (PROXIMAL_TUBULE, PODOCYTE, PRINCIPAL, DENDRITIC, NEUTROPHIL),
                    (NORMAL,), 4000, 1, a, both),
        DatasetSpec("mm-blood-smartseq2", MOUSE, "Mouse blood immune cells, Smart-seq2",
                    BLOOD, SMART_SEQ2, "cell", (T_CELL, B_CELL, NEUTROPHIL, MONOCYTE),
                    (NORMAL,), 600, 0, b, both, n_donors=2),
        DatasetSpec("hs-kidney-immune-2", HUMAN, "Immune landscape of the human kidney, second cohort",
                    KIDNEY, TENX_3V2, "cell", (DENDRITIC, NEUTROPHIL, MACROPHAGE, NK_CELL, PODOCYTE),
                    (NORMAL, CKD), 4500, 1, b, (V2,), curation_fails=True),
        DatasetSpec("mm-lung", MOUSE, "Mouse lung alveolar cells",
                    LUNG, TENX_3V3, "cell", (AT2, ALV_MACROPHAGE, FIBROBLAST, B_CELL),
                    (NORMAL,), 3500, 1, a, (V2,)),
        DatasetSpec("hs-kidney-3v4", HUMAN, "Human kidney epithelium profiled with 10x 3' v4",
                    KIDNEY, TENX_3V4, "cell", (PROXIMAL_TUBULE, PODOCYTE, PRINCIPAL, MACROPHAGE),
                    (NORMAL, CKD), 2500, 0, a, (V2,)),
        DatasetSpec("hs-brain-comorbid", HUMAN, "Microglia of Alzheimer disease donors with kidney disease",
                    BRAIN, TENX_3V3, "nucleus", (MICROGLIA, NEURON, ASTROCYTE),
                    (ALZHEIMER, ALZHEIMER_WITH_CKD, NORMAL), 3000, 1, b, (V2,), n_donors=6),
        DatasetSpec("hs-mm-xenograft", HUMAN, "Human kidney organoid cells grafted into mouse",
                    KIDNEY, TENX_3V3, "cell", (PROXIMAL_TUBULE, PODOCYTE, MACROPHAGE),
                    (NORMAL,), 2000, 1, a, (V1,), n_donors=2, host=MOUSE, host_fraction=0.25,
                    mixed_ancestry=True),
        DatasetSpec("cj-brain", MARMOSET, "Marmoset cortex glia and neurons",
                    BRAIN, TENX_3V3, "nucleus", (MICROGLIA, NEURON, ASTROCYTE, OLIGODENDROCYTE),
                    (NORMAL,), 2500, 0, b, (V2,), n_genes=1500),
    ]  # fmt: skip


def in_every_release(spec: DatasetSpec) -> bool:
    """Whether every release could hold the dataset: each builder keeps its organism and assay, and each
    dataset schema can write it (no joined disease before schema 7, cells of one organism)."""
    kept = all(spec.assay in r.rna_assays and spec.organism in r.experiments.values() for r in releases())
    return kept and not spec.comorbid and not spec.host


def _bench() -> list[DatasetSpec]:
    """Every small dataset four times larger, a second cohort of each, and one 220k-cell atlas."""
    small = _small()
    larger = [replace(d, n_cells=d.n_cells * 4) for d in small]
    cohorts = [replace(d, slug=f"{d.slug}-cohort2", n_cells=d.n_cells * 2) for d in small]
    atlas = replace(small[5], slug="hs-blood-atlas", title="Human blood immune atlas", n_cells=220_000)
    return [*larger, *cohorts, atlas]


def _registry(n_artifacts: int = 2000) -> list[DatasetSpec]:
    """CELLxGENE's order of magnitude of registered files: many tiny human datasets, one query for all."""
    first_versions = [d for d in _small() if d.revision == 1 and d.organism == HUMAN and in_every_release(d)]
    return [
        replace(
            first_versions[i % len(first_versions)],
            slug=f"{first_versions[i % len(first_versions)].slug}-{i:04d}",
            n_cells=40 + 10 * (i % 7),
            n_genes=200,
            n_donors=2,
            versions=(V2,) if i == n_artifacts - 1 else (V1, V2),  # the versions must differ
        )
        for i in range(n_artifacts)
    ]


# The atlas's five large files (index in `_small()` of the dataset they scale up, slug, title, cells): about
# 1.2 GB each (an h5ad holds about 5.3 kB per cell), four of them with T and B cells.
ATLAS_LARGE = (
    (5, "hs-blood-atlas", "Human blood immune atlas", 240_000),
    (7, "hs-lung-cell-atlas", "Human lung cell atlas", 235_000),
    (0, "hs-kidney-immune-atlas", "Immune cells of the human kidney, an atlas", 230_000),
    (9, "hs-spleen-atlas", "Human spleen immune atlas", 225_000),
    (3, "hs-brain-atlas", "Human cortex cell atlas", 220_000),
)
ATLAS_COHORTS, ATLAS_IN_V1 = 120, 20


def _atlas() -> list[DatasetSpec]:
    """Over 2,000,000 cells in 2025-11-08: five large files and 120 cohorts of the small datasets (1 to 3
    times their size); 2025-01-30 holds only the first 20 cohorts, so its census store stays small."""
    small = _small()
    large = [
        replace(small[i], slug=slug, title=title, n_cells=n, n_donors=16, versions=(V2,), revision=1)
        for i, slug, title, n in ATLAS_LARGE
    ]
    first_versions = [d for d in small if d.revision == 1 and not d.host]
    cohorts = []
    for i in range(ATLAS_COHORTS):
        base = first_versions[i % len(first_versions)]
        number = i // len(first_versions) + 1
        cohorts.append(
            replace(
                base,
                slug=f"{base.slug}-cohort-{number}",
                title=f"{base.title} (cohort {number})",
                n_cells=base.n_cells * (1 + number % 3),
                versions=(V1, V2) if i < ATLAS_IN_V1 and in_every_release(base) else (V2,),
            )
        )
    return [*large, *cohorts]


def datasets(scale: str) -> list[DatasetSpec]:
    """The demo's dataset files at one scale, in a stable order: a dataset two releases of different
    dataset schemas hold is two files of the same cells (`by_generation`)."""
    builders = {"small": _small, "bench": _bench, "registry": _registry, "atlas": _atlas}
    if scale not in builders:
        raise ValueError(f"unknown demo scale {scale!r}; choose one of {', '.join(SCALES)}")
    return [file for spec in builders[scale]() for file in by_generation(spec)]


def by_generation(spec: DatasetSpec) -> list[DatasetSpec]:
    """One spec per dataset schema among the releases holding it, each with those releases only; what a
    schema cannot hold (a joined disease in 5.x, cells of two organisms in 7.x) is refused."""
    schemas = dict.fromkeys(DATASET_SCHEMA[version] for version in spec.versions)
    for schema in schemas:
        if (schema.startswith("5.") and spec.comorbid) or (not schema.startswith("5.") and spec.host):
            raise ValueError(f"{spec.slug}: dataset schema {schema} cannot hold its cells")
    return [
        replace(spec, schema=schema, versions=tuple(v for v in spec.versions if DATASET_SCHEMA[v] == schema))
        for schema in schemas
    ]


def artifact_dataset_id(artifact) -> str:
    """A registered h5ad's dataset id: its key's stem, as in the public instance."""
    return PurePosixPath(artifact.key).stem


def release(scale: str, version: str) -> list[DatasetSpec]:
    """The datasets one release holds."""
    return [d for d in datasets(scale) if version in d.versions]


def by_stem(scale: str) -> dict[str, DatasetSpec]:
    return {d.file_stem: d for d in datasets(scale)}


def stages(organism: str) -> tuple[str, ...]:
    """The development stages the demo gives an organism's donors."""
    return STAGES.get(organism, LIFE_STAGES)


def previous_release(version: str) -> str | None:
    """The release a release's collection and store revise."""
    return V1 if version == V2 else None


GENERATION_BATCH = {"small": 1, "bench": 1, "registry": 500}  # files per generation job
GENERATION_CELLS = {"atlas": 240_000}  # or: consecutive datasets up to this many cells per job


def generation_batches(scale: str) -> list[list[DatasetSpec]]:
    """Datasets grouped into generation jobs (many tiny ones share a job at registry scale; at atlas scale
    each large file has a job of its own and the cohorts share jobs of up to as many cells)."""
    specs = datasets(scale)
    if scale in GENERATION_CELLS:
        return _packed(specs, GENERATION_CELLS[scale])
    size = GENERATION_BATCH[scale]
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def _packed(specs: list[DatasetSpec], cells: int) -> list[list[DatasetSpec]]:
    """Consecutive datasets in batches of at most `cells` cells (a larger dataset alone)."""
    batches: list[list[DatasetSpec]] = []
    for spec in specs:
        if batches and sum(d.n_cells for d in batches[-1]) + spec.n_cells <= cells:
            batches[-1].append(spec)
        else:
            batches.append([spec])
    return batches
