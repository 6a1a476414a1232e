"""Server-rendered SVG charts: no JavaScript, no CDN, nothing inline for the CSP to object to."""

from dataclasses import dataclass

WIDTH, HEIGHT, GAP = 720, 180, 2


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    maximum: int

    @property
    def first_label(self) -> str:
        return self.bars[0].label if self.bars else ""

    @property
    def last_label(self) -> str:
        return self.bars[-1].label if self.bars else ""


def bar_chart(points: list[tuple[str, int]]) -> BarChart:
    """(label, value) pairs -> bar geometry in a WIDTH x HEIGHT box, tallest bar = maximum value."""
    maximum = max((value for _, value in points), default=0)
    slot = WIDTH / max(len(points), 1)
    bars = []
    for index, (label, value) in enumerate(points):
        height = (value / maximum) * (HEIGHT - 1) if maximum else 0
        bars.append(Bar(index * slot + GAP / 2, HEIGHT - height, max(slot - GAP, 1), height, label, value))
    return BarChart(WIDTH, HEIGHT, bars, maximum)
