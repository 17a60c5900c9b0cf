// svg.h — dependency-free SVG figures for experiment reports: line charts (one or several
// panels) and side-by-side heatmaps. Each call writes one standalone SVG 1.1 file (white
// background, sans-serif text) that opens in a browser and embeds in Markdown as an image.
// All text is XML-escaped; valid UTF-8 passes through, invalid bytes and control characters
// become U+FFFD (newline, tab and CR are shown as \n, \t, \r, as token text usually is).
// NaN/Inf never reach the file: such points are gaps, such cells grey.
// Return 0, or -1 with err naming the file (bad arguments, or the write failing).
#pragma once
#include "../common.h"

// One line. x NULL = 0, 1, ..., n-1. A NaN (or infinite) x or y is a gap in the line; so is a
// y <= 0 on a logarithmic axis. Series of the same non-empty name share a color (and one
// legend entry) across panels; a NULL or "" name gets its own color and no legend entry.
typedef struct { const char *name; const double *x; const double *y; int n; int dashed; } SvgSeries;

// One line chart (720 px wide): axes with 1-2-5 ticks, axis labels, title, a legend under the
// plot, Okabe-Ito colors (colorblind-safe; they repeat after 8 series), a marker on every point
// when a series has <= 40 points (and on isolated points always). Legend names are cut at 40
// characters.
// y_min/y_max: NAN = automatic from the data (a little padding, rounded out to a tick; y_min 0
// when all data >= 0 and the smallest is near 0). log_y: logarithmic y axis (ticks at powers of
// ten, or 1-2-5 within a small range). Any title/label may be NULL (left out).
int svg_line_chart(const char *path, const char *title, const char *x_label, const char *y_label,
                   const SvgSeries *series, int n_series, double y_min, double y_max, int log_y,
                   Error *err);

// Several panels of line charts side by side in one file (shared legend, shared x and y
// scales; y tick labels on the first panel only), e.g. one per prompt. n_panels >= 1.
typedef struct { const char *title; const SvgSeries *series; int n_series; } SvgChartPanel;
int svg_line_panels(const char *path, const char *title, const char *x_label, const char *y_label,
                    const SvgChartPanel *panels, int n_panels, double y_min, double y_max,
                    Error *err);
// The same with a logarithmic y axis when log_y (svg_line_chart is this with one untitled panel).
int svg_line_panels_log(const char *path, const char *title, const char *x_label,
                        const char *y_label, const SvgChartPanel *panels, int n_panels,
                        double y_min, double y_max, int log_y, Error *err);

// Heatmaps side by side (e.g. base / LoRA / full), each rows x cols, values row-major, one shared
// color scale 0..vmax (vmax <= 0 or NaN: the max over all panels; values outside are clamped)
// with a color bar; viridis, interpolated from 9 stops. Row labels left of the first panel,
// column labels under each panel, thinned to every 2nd/5th/10th/... when they would collide.
// A NULL label array (or a NULL entry) shows the index instead. Every cell carries a <title>
// tooltip "row, col: value" (3 significant digits, full labels); NaN/Inf cells are grey
// ("missing"). Drawn labels are cut with an ellipsis: rows at 28 characters, columns at 16.
// rows, cols, n_panels >= 1.
typedef struct { const char *title; const double *values; } SvgHeatPanel;
int svg_heatmaps(const char *path, const char *title, const SvgHeatPanel *panels, int n_panels,
                 int rows, int cols, const char *const *row_labels, const char *const *col_labels,
                 const char *x_label, const char *y_label, double vmax, Error *err);
