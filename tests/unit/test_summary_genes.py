"""The summary's genes line names genes a spec asked for that the result lacks."""

from cellquery.query.summary import _asked


def query(join="inner", asked=6, every=5, some=1, none=()):
    coverage = {"genes_asked": asked, "in_every_dataset": every, "in_some_datasets": some}
    return {"name": "q", "gene_join": join, "gene_coverage": coverage | {"in_no_dataset": list(none)}}


def test_genes_the_inner_join_left_out_are_counted():
    assert _asked(query()) == " of 6 asked (1 measured by only some datasets; see logs/q/resolve.log)"


def test_genes_no_dataset_measures_are_counted_under_either_join():
    assert "1 by none" in _asked(query(join="outer", every=4, none=["ENSG1"]))


def test_nothing_is_added_when_every_gene_asked_is_kept_or_none_was_asked():
    assert _asked(query(every=6, some=0)) == ""
    assert _asked(query(join="outer")) == ""
    assert _asked({"name": "q", "gene_join": "inner", "gene_coverage": {"genes_asked": None}}) == ""
