from datetime import date, datetime, timedelta, timezone

import numpy as np
import pystac

from jobs.collect import sampling
from jobs.collect.pixels import harmonise, processing_offset
from jobs.collect.scenes import choose
from secoctl.spec import Collect


def test_a_candidate_depends_only_on_seed_and_index():
    small, large = Collect(locations=10), Collect(locations=10_000, workers=7)
    assert [sampling.candidate(small, i) for i in range(10)] == [sampling.candidate(large, i) for i in range(10)]
    assert sampling.candidate(Collect(seed=1), 0) != sampling.candidate(Collect(seed=0), 0)


def test_dates_are_the_interval_apart_and_shifted_back_at_most_a_year():
    collect = Collect(timestamps=5, interval_days=84, reference_date=date(2021, 3, 1))
    for index in range(50):
        dates = sampling.candidate(collect, index).dates
        assert [dates[k] - dates[k + 1] for k in range(4)] == [timedelta(days=84)] * 4
        assert timedelta(0) <= date(2021, 3, 1) - dates[0] < timedelta(days=365)


def test_locations_fall_around_the_most_populated_cities():
    collect = Collect(cities=20, sigma_km=50)
    cities = {name: (lon, lat) for name, lon, lat in sampling.most_populated_cities(20)}
    for index in range(40):
        location = sampling.candidate(collect, index)
        lon, lat = cities[location.city]
        assert abs(location.lat - lat) * sampling.KM_PER_DEGREE < 5 * 50


def test_overlapping_patches_are_dropped_in_favour_of_the_earlier_candidate():
    collect = Collect(cities=1, sigma_km=0.5, patch_size=264, locations=60)
    kept = sampling.kept_candidates(collect, 60)
    assert kept[0] and not all(kept)
    accepted = [sampling.candidate(collect, i) for i in range(60) if kept[i]]
    for a in accepted:
        for b in accepted:
            if a is not b:
                half_lon, half_lat = sampling.patch_half_extent_degrees(collect, a.lat)
                assert abs(a.lat - b.lat) >= 2 * half_lat or abs(a.lon - b.lon) >= 2 * half_lon


def test_worker_slices_cover_every_candidate_once():
    for total, workers in ((10, 3), (7, 7), (3, 5), (1000, 32)):
        covered = [i for w in range(workers) for i in sampling.worker_slice(total, workers, w)]
        assert covered == list(range(total))


def _item(name: str, day: int, cloud: float) -> pystac.Item:
    return pystac.Item(name, None, None, datetime(2021, 6, day, 10, tzinfo=timezone.utc), {"eo:cloud_cover": cloud})


def test_the_least_cloudy_acceptable_scene_is_chosen():
    items = [_item("exact-but-cloudy", 15, 40.0), _item("clear", 10, 1.0), _item("hazy", 14, 6.0)]
    assert choose(items, date(2021, 6, 15), 10.0, lambda item: True).id == "clear"
    assert choose(items, date(2021, 6, 15), 10.0, lambda item: item.id != "clear").id == "hazy"
    assert choose(items, date(2021, 6, 15), 0.5, lambda item: True) is None


def test_ties_go_to_the_scene_nearest_the_date():
    items = [_item("far", 8, 2.0), _item("near", 14, 2.0)]
    assert choose(items, date(2021, 6, 15), 10.0, lambda item: True).id == "near"


def test_baseline_04_offset_is_removed_and_low_values_become_nodata():
    old = pystac.Item("old", None, None, datetime(2021, 1, 1), {"s2:processing_baseline": "03.01"})
    new = pystac.Item("new", None, None, datetime(2023, 1, 1), {"s2:processing_baseline": "05.09"})
    assert [processing_offset(old), processing_offset(new)] == [0, 1000]
    pixels = np.array([[[[1500, 900, 0]]], [[[1500, 900, 0]]]], np.uint16)
    assert harmonise(pixels, [0, 1000]).tolist() == [[[[1500, 900, 0]]], [[[500, 0, 0]]]]
