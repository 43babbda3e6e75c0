"""The paper's published numbers (Lu & Smith 2025, arXiv 2504.15432), for the reference columns of reports.

Read from ``shared/paper/reference-results.md``; percent, as printed. Keys are silverlabel's preset names.
"""

TABLE1_COLUMNS = ("acc", "macro_f1", "alpha", "sd_acc", "sd_f1", "p_unchanged")

TABLE1: dict[str, list[tuple[str, tuple[float, ...]]]] = {
    "imdb": [("gold", (93.84, 93.82, 90.60, 0.28, 0.29, 90.00)),
             ("Qwen 3B", (93.33, 93.31, 89.99, 0.16, 0.16, 89.68)),
             ("Qwen 7B", (92.95, 92.94, 87.28, 0.20, 0.20, 86.56))],
    "ecommerce": [("gold", (96.26, 96.23, 96.69, 0.25, 0.22, 95.24)),
                  ("Qwen 3B", (66.05, 66.62, 75.04, 3.14, 3.69, 70.14)),
                  ("Qwen 7B", (92.74, 92.88, 79.18, 0.81, 0.76, 69.35))],
    "manifestos": [("gold", (83.56, 79.38, 84.30, 0.69, 0.54, 82.04)),
                   ("Qwen 3B", (66.02, 41.91, 52.72, 0.00, 3.68, 50.00)),
                   ("Qwen 7B", (71.51, 60.62, 43.75, 1.30, 7.96, 30.45))],
    "toxic": [("gold", (91.13, 75.24, 84.08, 0.23, 1.01, 88.50)),
              ("Qwen 3B", (86.86, 65.18, 57.29, 1.74, 1.93, 47.39)),
              ("Qwen 7B", (83.89, 56.53, 68.49, 5.31, 5.04, 77.49))],
}

# Table 2 (7B teacher). IMDB ensemble macro-F1 is printed as 83.45 in the paper, an evident typo for 93.45.
TABLE2: dict[str, list[tuple[str, tuple[float, ...]]]] = {
    "imdb": [("entropy", (93.28, 93.27, 89.33, 0.32, 0.32, 89.00)),
             ("ensemble", (93.46, 93.45, 89.43, 0.02, 0.02, 94.72))],
    "ecommerce": [("entropy", (91.79, 91.85, 83.09, 0.71, 0.61, 76.89)),
                  ("ensemble", (95.14, 95.15, 93.87, 0.20, 0.14, 95.54))],
    "manifestos": [("entropy", (71.06, 62.48, 59.80, 2.11, 2.63, 52.82)),
                   ("ensemble", (81.58, 77.97, 82.55, 0.24, 0.40, 81.51))],
    "toxic": [("entropy", (81.56, 61.42, 68.44, 3.77, 3.67, 56.20)),
              ("ensemble", (89.17, 74.05, 61.48, 0.69, 0.86, 77.20))],
}
