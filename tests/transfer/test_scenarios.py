"""Transfer-energy scenarios: counting rules, the EEKI study's figures, units, the data file."""

from __future__ import annotations

import pytest

from eeki_label.errors import CatalogueError, UsageError
from eeki_label.transfer import scenarios as sc


@pytest.fixture(scope="module")
def params():
    return sc.load_parameters()


def test_federated_counting_rule_of_the_study():
    c = sc.federated_counts(clients=5, rounds=50)
    assert (c.transfers, c.encodes, c.decodes) == (500, 300, 500)
    one = sc.federated_counts(clients=1, rounds=1)
    assert (one.transfers, one.encodes, one.decodes) == (2, 2, 2)


def test_federated_delta_counts_full_model_only_on_first_download():
    c = sc.federated_counts(clients=5, rounds=50, delta=True)
    assert (c.transfers, c.encodes, c.decodes) == (500, 300, 500)
    assert (c.full_transfers, c.full_encodes, c.full_decodes) == (5, 1, 5)


def test_one_time_and_periodic_counts():
    c = sc.one_time_counts(devices=3)
    assert (c.transfers, c.encodes, c.decodes) == (3, 1, 3)
    c = sc.periodic_counts(updates=4, devices=10)
    assert (c.transfers, c.encodes, c.decodes) == (40, 4, 40)
    d = sc.periodic_counts(updates=4, devices=10, delta=True)
    assert d.delta_transfers == 40 and d.full_transfers == 0
    with pytest.raises(UsageError):
        sc.periodic_counts(updates=0)


def test_study_uncompressed_resnet18_transfer_within_5_percent(params):
    study = params.study_reference
    r = sc.one_time(study["original_bytes"], None, params.link("de-broadband-study"),
                    params.device("jetson-xavier-nx-study"))
    assert r.uncompressed.total_wh == pytest.approx(study["uncompressed_transfer_wh"], rel=0.05)
    assert r.uncompressed.total_wh == pytest.approx(0.0878, rel=0.005)


def test_study_compressed_transfer_and_codec_energy(params):
    study = params.study_reference
    dev = params.device()
    # the study's codec energy (0.0466 Wh) at the device power: seconds of encode + decode on the device
    codec_s = study["codec_wh"] * 3600 / dev.codec_power_w
    nnc = sc.Payload(study["compressed_bytes"], encode_s=codec_s, decode_s=0.0, label="nnc")
    r = sc.one_time(study["original_bytes"], nnc, params.link(), dev)
    assert r.nnc.transfer_wh == pytest.approx(study["compressed_transfer_wh"], rel=0.05)
    assert r.nnc.total_wh == pytest.approx(study["compressed_total_wh"], rel=0.05)
    assert r.saving(r.nnc) == pytest.approx(0.33, abs=0.02)  # the study's -33 %


def test_energy_components_and_units():
    link = sc.Link(up_bit_s=8e6, down_bit_s=8e6)
    dev = sc.Device(transfer_power_w=10.0, codec_power_w=5.0)
    grid = sc.Grid(g_co2_per_kwh=400.0, price_eur_per_kwh=0.3)
    e = sc.energy(sc.one_time_counts(2), sc.Payload(1e6, encode_s=3.0, decode_s=1.0), link, dev,
                  network_kwh_per_gb=0.03, grid=grid)
    assert e.transfer_time_s == pytest.approx(2 * 2.0)           # 1 MB: 1 s up + 1 s down, twice
    assert e.transfer_j == pytest.approx(40.0)
    assert e.codec_j == pytest.approx(5.0 * (3.0 + 2 * 1.0))
    assert e.network_j == pytest.approx(0.03 * 2e6 / 1e9 * 3.6e6)
    assert e.total_wh == pytest.approx(e.total_j / 3600)
    assert e.co2_g == pytest.approx(e.total_j / 3.6e6 * 400)
    assert e.cost_eur == pytest.approx(e.total_j / 3.6e6 * 0.3)


def test_savings_scale_linearly_with_rounds_and_clients(params):
    link, dev = params.link(), params.device()
    nnc = sc.Payload(1e6, 0.5, 0.1, "nnc")
    base = sc.federated(4e6, nnc, link, dev, clients=5, rounds=10)
    twice = sc.federated(4e6, nnc, link, dev, clients=5, rounds=20)
    more = sc.federated(4e6, nnc, link, dev, clients=10, rounds=10)
    assert twice.nnc.total_j == pytest.approx(2 * base.nnc.total_j)
    assert more.uncompressed.total_j == pytest.approx(2 * base.uncompressed.total_j)


def test_delta_variant_needs_a_delta_payload_and_saves_energy(params):
    link, dev = params.link(), params.device()
    r = sc.federated(46.8e6, sc.Payload(6.86e6, 1.0, 0.5, "nnc"), link, dev, clients=5, rounds=50,
                     nnc_delta=sc.Payload(0.2e6, 0.3, 0.1, "nnc-delta"))
    assert r.nnc_delta.total_j < r.nnc.total_j < r.uncompressed.total_j
    assert r.saving(r.nnc_delta) > 0.9
    with pytest.raises(UsageError):
        sc.energy(sc.federated_counts(2, 2, delta=True), sc.Payload(1.0), link, dev)


def test_parameters_file_has_sources_and_fallbacks(params):
    assert params.link().up_bit_s == pytest.approx(22.51e6)
    assert params.grid("de").g_co2_per_kwh == 381
    assert params.grid("DE-ES-study").g_co2_per_kwh == 360
    xx = params.grid("XX")
    assert xx.g_co2_per_kwh == 475 and "unknown" in xx.country
    assert params.grid("FR", price=0.2).price_eur_per_kwh == 0.2
    assert params.network_kwh_per_gb["fixed"] == 0.03 and params.network_kwh_per_gb["mobile"] == 0.14
    assert params.car_g_per_km == 107.5 and params.sha256
    with pytest.raises(CatalogueError):
        params.link("nowhere")


def test_damaged_parameters_are_a_catalogue_error(params):
    import json

    from eeki_label.resources import load_json

    doc = json.loads(json.dumps(load_json("energy", "transfer.json").content))
    doc["grid_g_per_kwh"]["DE"]["source"] = ""
    with pytest.raises(CatalogueError, match="no source"):
        sc.parse_parameters(doc)
    del doc["links"]
    with pytest.raises(CatalogueError):
        sc.parse_parameters(doc)
