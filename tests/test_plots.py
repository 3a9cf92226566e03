"""`secoctl plot`: smoothed curves over faint raw ones, legends off the data, the collapse panel."""

import math

import pytest

from secoctl import collapse
from secoctl.report.plots import curves_figure, ema


def test_the_ema_is_debiased_so_a_flat_curve_stays_flat_and_a_jump_is_eased_in():
    assert ema([2.0] * 5) == pytest.approx([2.0] * 5)
    smoothed = ema([0.0] * 10 + [1.0] * 10)
    assert smoothed[9] == 0.0 and 0 < smoothed[10] < 0.5 and 0.99 < smoothed[-1] < 1


def records(with_health: bool) -> list[dict]:
    made = []
    for step in range(10, 310, 10):
        record = {
            "step": step,
            "loss": 20 - step / 30,
            "samples_per_s": 100.0 + step % 7,
            **{f"loss_{i}": 6 - step / 100 + (step % 3) / 5 for i in range(3)},
        }
        if with_health:
            record.update({f"embed_std_{i}": 0.08 - step / 10_000 for i in range(3)}, pos_cos=0.5, neg_cos=0.01)
        made.append(record)
    return made


@pytest.mark.parametrize("with_health", [True, False])  # False: metrics written before issue 29
def test_every_legend_lies_off_its_axes_and_the_collapse_panel_has_the_alarm_line(with_health):
    from matplotlib import pyplot as plt

    figure = curves_figure(records(with_health), "demo: pretrain loss", 128)
    figure.canvas.draw()
    losses, health, _ = figure.axes
    renderer = figure.canvas.get_renderer()
    for axes in (losses, health):
        assert not axes.get_legend().get_window_extent(renderer).overlaps(axes.get_window_extent(renderer))
    assert len(losses.lines) == 6, "each sub-space: raw and smoothed"
    assert min(line.get_alpha() or 1 for line in losses.lines) == pytest.approx(0.25)
    levels = sorted(line.get_ydata()[0] for line in health.lines if len(set(line.get_ydata())) == 1)
    assert levels[:2] == pytest.approx(sorted([collapse.threshold(128), 1 / math.sqrt(128)]))
    assert len(health.lines) == (2 + 6 if with_health else 2)
    plt.close(figure)


def test_the_loss_panel_says_why_the_loss_rises_while_the_queue_fills():
    from matplotlib import pyplot as plt

    figure = curves_figure(records(True), "demo: pretrain loss", 128)
    note = figure.axes[0].get_legend().get_title().get_text()
    assert "InfoNCE" in note and "queue" in note and "rises while the queue fills" in note
    plt.close(figure)
