"""``refine-masks visualize``: coarse vs refined (vs GT) masks drawn per image, zoomed crops of the
instances that changed most, and a static gallery (index.html) that opens offline.

selection (what to draw, IoUs, GT matching) -> drawing (pixels) -> gallery (files) + html_page (index.html);
command is the click wrapper. Kept empty of imports so that the CLI's --help loads none of them.
"""
