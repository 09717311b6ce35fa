"""Data sources for the lake's landing zone: the simulated bank (`segone simulate`, the closed loop's world) and the
Berka importer (`segone import-berka`). The nightly stages read only what these write into landing/."""
