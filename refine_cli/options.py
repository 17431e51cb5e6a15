"""Click parameter types shared by the commands."""

from __future__ import annotations

import math

import click


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and ±inf.

    click's FloatRange compares with < and >, which are all False for nan, so "--score-thr nan"
    would pass any range and then silently keep every record (nothing is "below" nan).
    """

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
