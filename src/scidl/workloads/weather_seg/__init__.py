"""``weather_seg``: extreme-weather segmentation (Kurth et al. 2018), synthetic.

Docs: ``docs/workloads/weather_seg.md``.
"""

from scidl.workloads.weather_seg.workload import WeatherSeg, WeatherSegConfig

__all__ = ["WeatherSeg", "WeatherSegConfig"]
