"""Would the tests notice? Break the code on purpose, one place at a time, and check that a test fails.

Each *mutant* below changes one line (or a few) of ``geed`` or a profile at a place that decides a number or a
verdict -- a distance, a normaliser, an interval, a correction for several comparisons, a rule's
threshold, a training loss or augmentation, a data split, a chapter's cache key, what a training resume
restores, what the book publishes, how published weights are read, what a chart or the ledger's page
shows, what the inputs survey reports, the `paper` profile's settings, how a group acts on a layer,
what the calibration simulates, what a streamed evaluation checks and reports, what a chapter's text
quotes -- into a plausible mistake, and names the test that must fail on it. The script copies the project's tracked files into a temporary
folder (the working tree is never changed, so an interrupted run leaves nothing broken), applies each
mutant there alone, runs its test, and reports which were caught. A mutant whose test passes is a
hole in the suite; one whose lines are no longer in the source has drifted from the code and must
be updated (``tests/scripts/test_mutants.py`` checks that every site is still there).

    python scripts/mutants.py            # every mutant: about 34 minutes on two cores
    python scripts/mutants.py --list     # the mutants and their tests
    python scripts/mutants.py -k margin  # those whose name contains a word
    python scripts/mutants.py --file geed/metrics.py --file geed/_fused.py  # those of the core metrics (CI runs these)

Exit status 0 when every mutant is caught.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the project root
    old: str  # must occur exactly once in the file
    new: str
    test: str  # the pytest node (file::function) that must fail


METRICS, FUSED, CLAIMS, CALIBRATION = "geed/metrics.py", "geed/_fused.py", "geed/report/claims.py", "geed/report/calibration.py"
T_METRICS, T_FUSED, T_INPUTS = "tests/core/test_metrics.py", "tests/core/test_fused.py", "tests/core/test_orbit_inputs.py"
T_CAL, T_MEASURES = "tests/report/test_calibration.py", "tests/measures/test_measures.py"
BY_HAND = f"{T_METRICS}::test_output_metrics_on_an_example_worked_by_hand"
SAME_AS_TENSORS = f"{T_FUSED}::test_same_values_as_the_tensor_path"
BLOCKS = f"{T_FUSED}::test_the_rows_may_be_taken_in_blocks_of_any_size"
NOMINAL = f"{T_CAL}::test_false_verdict_rate_is_at_most_nominal"
NOT_POSITIVE = f"{T_INPUTS}::test_a_normaliser_that_is_not_positive_gives_nan_with_a_warning_and_keeps_every_other_result"

OBJECTIVES, LOOP, PATCHES, OOD, BEYOND = ("geed/training/objectives.py", "geed/training/loop.py", "geed/data/patches.py", "geed/data/ood.py",
                                        "geed/experiments/beyond.py")
NT_XENT = "tests/training/test_objectives.py::test_simclr_loss_is_nt_xent_with_the_other_view_as_positive"
DINO_LOSS = "tests/training/test_objectives.py::test_dino_loss_matches_each_view_with_the_teachers_output_on_the_other"
CROSS_ENTROPY = "tests/training/test_objectives.py::test_cross_entropy_sees_the_augmented_batch_and_adds_the_weighted_invariance_penalty"
SEPARATE_ROWS = "tests/data/test_patches.py::test_training_and_test_patches_come_from_separate_rows"
CACHE_KEYS = "tests/experiments/test_cache_keys.py::test_a_change_of_any_measured_parameter_changes_the_cache_key"
FLIP_EED_44 = "tests/experiments/test_pretrained_selfsup_claims.py::test_section_44_divides_by_the_normaliser_of_its_reference_patches"
BEYOND_DIRECTIONS = "tests/experiments/test_beyond_group.py::test_the_claims_follow_the_numbers_in_both_directions"
S3_EACH_FAILS = "tests/experiments/test_section3_claims.py::test_each_claim_fails_when_its_part_is_false_and_only_it"
ZOO, PRETRAINED, CHARTS, LEDGER = "geed/models/zoo.py", "geed/experiments/pretrained.py", "geed/report/charts.py", "geed/report/ledger.py"
T_ZOO, T_43, T_CHARTS, T_LEDGER = ("tests/models/test_zoo.py", "tests/experiments/test_pretrained_selfsup_claims.py", "tests/report/test_charts.py",
                                  "tests/report/test_ledger.py")
ADAPTER = f"{T_ZOO}::test_the_input_adapter_standardises_each_channel"
BIAS_ORIENTATION = f"{T_ZOO}::test_levit_attention_biases_keep_their_orientation_when_resized"
GLANCE_ROW = "tests/report/test_pipeline.py::test_the_glance_shows_each_chapters_headline_claim_safely_in_one_table_row"
T_DIGITS = "tests/models/test_digit_models.py"
SUMMARISE = "tests/core/test_stats.py::test_summarise_gives_each_groups_mean_and_the_interval_its_sampling_unit_calls_for"
T_WIRING = "tests/experiments/test_chapter_wiring.py"
WIRING_43 = f"{T_WIRING}::test_section_43_judges_stand_ins_as_stand_ins_and_keys_and_retrains_runs_as_measured"
WIRING_44 = f"{T_WIRING}::test_section_44_keys_its_measurement_by_what_it_measures_and_measures_the_starting_point"
LEDGER_ROWS = f"{T_LEDGER}::test_the_page_shows_each_claim_with_its_verdict_colour_and_its_rates"
REGISTRY, INPUTS, PAPER = "geed/models/registry.py", "geed/report/inputs.py", "profiles/paper.yml"
T_REGISTRY, T_PIPELINE = "tests/models/test_registry.py", "tests/report/test_pipeline.py"
SURVEY_DATA = f"{T_PIPELINE}::test_the_survey_finds_the_data_that_is_there_and_only_that"
SURVEY_WEIGHTS = f"{T_PIPELINE}::test_the_survey_names_the_substitute_of_every_section_that_needs_missing_weights"
PAPER_REFUSES = f"{T_PIPELINE}::test_the_paper_profile_refuses_to_start_without_its_inputs_unless_substitutes_are_accepted"
ESTIMATES = f"{T_PIPELINE}::test_time_estimates_scale_the_last_run"
PAPERS_PROTOCOL = "tests/report/test_book.py::test_the_paper_profile_is_the_papers_protocol_wherever_the_paper_states_it"
ACTIONS, AUGMENT, TESTING, CHAPTER = "geed/actions.py", "geed/training/augmentation.py", "geed/testing.py", "geed/report/chapter.py"
ONE_PIXEL_KERNEL = f"{T_METRICS}::test_on_one_pixel_maps_every_rotation_is_in_the_kernel"
REGULAR_FIELDS = f"{T_FUSED}::test_regular_fields_of_a_steerable_model"
AUGMENTS = "tests/training/test_fit.py::test_augment_flips_about_half_crops_and_jitters_reproducibly"
WHOLE_CIRCLE = "tests/data/test_digits_ood.py::test_random_rotations_cover_the_whole_circle_uniformly"
PROVENANCE = f"{T_PIPELINE}::test_provenance_shows_every_parameter_in_full"
SOME_PART = f"{T_CAL}::test_a_claim_about_some_part_is_simulated_where_its_documentation_says"
ORBIT = "geed/orbit.py"
RD = "geed/experiments/rotated_digits.py"
TRACKED = "tests/experiments/test_rotated_digits_claims.py::test_every_recorded_checkpoint_is_measured_under_the_masked_group_on_points_apart_from_m"
OOD_M = "tests/experiments/test_rotated_digits_claims.py::test_out_of_distribution_the_normaliser_is_computed_on_each_data_set"
GROUPS, T_GROUPS = "geed/groups.py", "tests/core/test_groups.py"
QUOTES_41 = "tests/experiments/test_rotated_digits_claims.py::test_section_41_quotes_the_numbers_of_its_tables"
TRAIN_MODE = f"{T_INPUTS}::test_a_model_in_training_mode_is_measured_in_evaluation_mode_and_left_unchanged"
FINITE_BLOCKS = f"{T_INPUTS}::test_the_inputs_finiteness_is_checked_a_block_of_samples_at_a_time"

MUTANTS = [
    # the metrics
    Mutant("orbit mean ignores the kernel", METRICS, "return base + (kernel - base).mean(dim=0)", "return base",
           f"{T_METRICS}::test_fhat_over_nontrivial_kernel"),
    Mutant("cosine without the zero tolerance", METRICS, "floor = (tol * scale).clamp_min(torch.finfo(dtype).tiny)",
           "floor = (0.0 * scale).clamp_min(torch.finfo(dtype).tiny)", SAME_AS_TENSORS),
    Mutant("cosine M over pairs including each point with itself", METRICS, "return n, s @ s - sq", "return n, s @ s", NOT_POSITIVE),
    Mutant("l2 M over the pairs within a block of rows only", METRICS,
           "total = total + (d.sum() - d.diagonal().sum() if j == i else d.sum())",
           "total = total + (d.sum() - d.diagonal().sum() if j == i else 0.0)",
           f"{T_METRICS}::test_mean_pairwise_is_the_mean_over_every_pair_of_distinct_points"),
    Mutant("M = 0 not refused", METRICS, "    if M <= 0:\n        what =", "    if M < 0:\n        what =",
           f"{T_INPUTS}::test_a_collapsed_latent_space_has_no_l2_normaliser"),
    Mutant("DI's KL reversed", METRICS, "return kl_divergence(first.reshape(G * N, -1), P.reshape(G * N, -1))",
           "return kl_divergence(P.reshape(G * N, -1), first.reshape(G * N, -1))", BY_HAND),
    Mutant("LI against the orbit mean", METRICS, 'return _pair_values(logits, TrivialAction(group), half_squared_l2, "input")',
           'return _pair_values(logits, TrivialAction(group), half_squared_l2, "orbit")', BY_HAND),
    Mutant("the input reference is the orbit mean", METRICS, '    if reference == "input":\n        return Y[0]',
           '    if reference == "input":\n        return orbit_mean(Y, action)', BY_HAND),
    # the compiled channelwise pass
    Mutant("the pass ignores the region on f(g x)", FUSED, "                        b = np.float64(src[q, s])\n                        sa += a * a * r[s]",
           "                        b = np.float64(src[q, s])\n                        sa += a * a", SAME_AS_TENSORS),
    Mutant("turned targets built in one block taken as built in the next", FUSED,
           "        built = np.zeros(kind.shape[0], dtype=np.bool_)\n        for g in range(G):",
           "        built = keep.copy() if blk > 0 else np.zeros(kind.shape[0], dtype=np.bool_)\n        for g in range(G):", BLOCKS),
    Mutant("the last block one row short", FUSED, "        rows = min(P, p0 + block) - p0", "        rows = min(P - 1, p0 + block) - p0", BLOCKS),
    Mutant("a block's rows counted from the first block's", FUSED, "                p = p0 + q\n", "                p = q\n", BLOCKS),
    Mutant("any interpolated map taken as derived", FUSED, "COMPOSE_TOL = 1e-12", "COMPOSE_TOL = 1e9", SAME_AS_TENSORS),
    Mutant("channel permutation read without its inverse", FUSED, "            c = inv[g, p % C]", "            c = p % C",
           f"{T_FUSED}::test_regular_fields_of_a_steerable_model"),
    Mutant("one dead side counts as undefined", FUSED, "                if za and zb:\n                    cos = np.nan",
           "                if za:\n                    cos = np.nan", SAME_AS_TENSORS),
    # the streamed evaluation
    Mutant("streaming keeps the last element as f(x)", "geed/orbit.py", "identity[lat][small_done : small_done + b] = joined[lat][0]",
           "identity[lat][small_done : small_done + b] = joined[lat][-1]", NOT_POSITIVE),
    Mutant("dead-channel share over the last block only", "geed/orbit.py", "        if dead is not None:\n            self.total += total",
           "        if dead is not None:\n            self.total = total",
           "tests/core/test_orbit_streaming.py::test_streaming_equals_the_reference_path_on_the_digit_models"),
    Mutant("streamed softmax G-EED with its KL reversed", "geed/orbit.py",
           'add(("softmax" + sfx, OUTPUT), _pair_values(probs, trivial, kl_divergence, ref), b)',
           'add(("softmax" + sfx, OUTPUT), _pair_values(probs, trivial, lambda p, q: kl_divergence(q, p), ref), b)', NOT_POSITIVE),
    # the groups
    Mutant("interpolated rotations turn clockwise", "geed/groups.py",
           "    mat = torch.tensor([[[c, -s * h / w, 0.0], [s * w / h, c, 0.0]]], dtype=dtype, device=device)",
           "    mat = torch.tensor([[[c, s * h / w, 0.0], [-s * w / h, c, 0.0]]], dtype=dtype, device=device)",
           "tests/core/test_groups.py::test_composition_law_interpolated_is_approximate"),
    Mutant("the disc one pixel smaller", "geed/groups.py", "    radius = min(size_h, size_w) / 2\n", "    radius = min(size_h, size_w) / 2 - 1\n",
           f"{T_FUSED}::test_pixel_maps_are_the_groups_action"),
    Mutant("dihedral composition ignores the flip", "geed/groups.py", "        angle = a.angle - b.angle if a.flip else a.angle + b.angle\n",
           "        angle = a.angle + b.angle\n", "tests/core/test_groups.py::test_composition_law_exact"),
    Mutant("rotations drawn from half the circle", "geed/data/digits.py", "angles = torch.rand(x.shape[0], generator=generator) * 360.0",
           "angles = torch.rand(x.shape[0], generator=generator) * 180.0",
           "tests/data/test_digits_ood.py::test_random_rotations_cover_the_whole_circle_uniformly"),
    # intervals and the verdict rules
    Mutant("bootstrap interval at 90% called 95%", "geed/stats.py", "np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])",
           "np.quantile(means, [1 - level, level])", "tests/core/test_stats.py::test_bootstrap_interval_has_the_requested_level"),
    Mutant("t interval one-sided", "geed/stats.py", "_st.t.ppf(0.5 + level / 2, df=arr.size - 1)", "_st.t.ppf(level, df=arr.size - 1)",
           "tests/core/test_stats.py::test_t_interval_matches_scipy"),
    Mutant("every-part rule without Holm on its failing side", CLAIMS, "fails = np.min(p_lo, axis=-1) < c / k", "fails = np.min(p_lo, axis=-1) < c",
           NOMINAL),
    Mutant("opposite orders without the correction over comparisons", CLAIMS, "holds = np.min(opp, axis=-1) < c / parts",
           "holds = np.min(opp, axis=-1) < c", f"{T_CAL}::test_a_rule_that_lost_its_correction_over_parts_is_flagged"),
    Mutant("t statistics with ddof 0", CLAIMS, "w**2 * g.var(axis=-1, ddof=1)", "w**2 * g.var(axis=-1, ddof=0)", NOMINAL),
    Mutant("Welch's degrees of freedom doubled", CLAIMS, "df = np.where(np.isfinite(df) & (df > 0), df, min(",
           "df = np.where(np.isfinite(df) & (df > 0), 2 * df, min(", NOMINAL),
    Mutant("no-decrease margin with the wrong sign", CLAIMS, '    return -margin if kind == "no_decrease" else 0.0',
           '    return margin if kind == "no_decrease" else 0.0', f"{T_CAL}::test_a_claim_of_no_decrease_is_tested_against_minus_its_margin"),
    Mutant("all_of lets holds win", CLAIMS,
           "verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE",
           "verdict = HOLDS if HOLDS in verdicts else FAILS if FAILS in verdicts else INCONCLUSIVE",
           "tests/report/test_cache_claims.py::test_near_zero_exceeds_all_of"),
    Mutant("the over-training baseline may be step 0", CLAIMS, "    later = [s for s in steps if s > 0] or steps\n", "    later = steps\n",
           f"{T_CAL}::test_the_over_training_baseline_does_not_depend_on_the_checkpoint_spacing"),
    Mutant("effective rank without centring", CLAIMS, "s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)",
           "s = np.linalg.svd(z, compute_uv=False)", "tests/report/test_cache_claims.py::test_effective_rank_counts_the_directions_the_points_vary_along"),
    Mutant("the interval beside a verdict at 90%", CLAIMS, "half = float(_st.t.ppf(1 - ALPHA / 2, self.df) * self.se)",
           "half = float(_st.t.ppf(1 - ALPHA, self.df) * self.se)", f"{T_CAL}::test_the_intervals_shown_beside_a_verdict_are_95_percent_t_intervals"),
    Mutant("values that are not finite reach a verdict", CLAIMS, "    if not np.all(np.isfinite(arr)):\n        raise ValueError",
           "    if False:\n        raise ValueError", f"{T_CAL}::test_the_intervals_shown_beside_a_verdict_are_95_percent_t_intervals"),
    Mutant("false-verdict rate of the null case only", CALIBRATION, "    return max(cases)\n", "    return cases[0]\n",
           f"{T_CAL}::test_the_reported_rate_covers_the_boundaries_where_a_wrong_verdict_is_likeliest"),
    # the chapters' own guards
    Mutant("stand-in weights judged as ImageNet weights", "geed/experiments/pretrained.py", "        if arch not in stand_in:\n            return verdict",
           "        if True:\n            return verdict", "tests/experiments/test_pretrained_selfsup_claims.py::test_claims_43_on_stand_in_weights_are_not_tested"),
    Mutant("collapsed latent spaces judged", "geed/experiments/selfsup.py", "        if bad:\n            verdict = C.not_tested",
           "        if False:\n            verdict = C.not_tested", "tests/experiments/test_pretrained_selfsup_claims.py::test_claims_44_with_a_collapsed_model_are_not_tested"),
    Mutant("two models per objective compared over inputs", "geed/experiments/selfsup.py", '        if sel["seed"].nunique() > 1:',
           '        if sel["seed"].nunique() > 2:', "tests/experiments/test_pretrained_selfsup_claims.py::test_claims_44_follow_the_numbers"),
    Mutant("the normaliser multiplies", METRICS, "        return _nanmean(self.per_pair, axis=1) / self.normaliser",
           "        return _nanmean(self.per_pair, axis=1) * self.normaliser", f"{T_METRICS}::test_latent_normalisation_is_scale_free"),
    # the measures beside G-EED
    Mutant("SI maps back by g instead of its inverse", "geed/measures/saliency.py",
           "group.act(saliency_map(model, group.act(x, i), target, steps), group.inverse(i))",
           "group.act(saliency_map(model, group.act(x, i), target, steps), i)",
           f"{T_MEASURES}::test_saliency_invariance_is_one_for_weight_tied_and_lower_for_plain"),
    Mutant("integrated gradients by a left Riemann sum", "geed/measures/saliency.py", "alpha = (k + 0.5) / steps", "alpha = k / steps",
           f"{T_MEASURES}::test_integrated_gradients_of_a_quadratic_are_exact"),
    Mutant("saliency keeps the weak pixels", "geed/measures/saliency.py", "ig = torch.where(ig >= keep * peak, ig, torch.zeros_like(ig))",
           "ig = torch.where(ig <= keep * peak, ig, torch.zeros_like(ig))", f"{T_MEASURES}::test_the_saliency_map_keeps_only_the_pixels_near_the_peak"),
    Mutant("the invariance penalty may draw the identity", "geed/measures/saliency.py",
           "idx = torch.randint(1, len(group), (x.shape[0],), generator=generator)", "idx = torch.randint(0, len(group), (x.shape[0],), generator=generator)",
           f"{T_MEASURES}::test_the_invariance_penalty_never_draws_the_identity"),
    Mutant("spectral norm squared", "geed/measures/sensitivity.py", "new_sigma = _per_sample_norm(jv)", "new_sigma = _per_sample_norm(jtjv)",
           f"{T_MEASURES}::test_spectral_norm_of_a_linear_map_is_its_largest_singular_value"),
    Mutant("control perturbations not scaled to the rotation", "geed/measures/sensitivity.py",
           "noise = noise / _per_sample_norm(noise).clamp_min(1e-30).view(-1, 1, 1, 1) * size.view(-1, 1, 1, 1)",
           "noise = noise / _per_sample_norm(noise).clamp_min(1e-30).view(-1, 1, 1, 1)",
           f"{T_MEASURES}::test_the_random_perturbations_are_as_large_as_the_rotations"),
    Mutant("Lie derivative without the mask", "geed/measures/sensitivity.py", "    if mask:\n        x = x * disc_mask",
           "    if False:\n        x = x * disc_mask", f"{T_MEASURES}::test_lie_derivative_matches_finite_differences_and_vanishes_for_constant_model"),
    Mutant("permutations matched against f(g x) itself", "geed/measures/permutations.py", "S = similarity_matrix(Y[i], spatial.act(Y[0], i))",
           "S = similarity_matrix(Y[i], Y[0])", f"{T_MEASURES}::test_permutation_matching_recovers_the_steerable_permutation"),
    Mutant("matched permutations stored inverted", "geed/measures/permutations.py", "        perm[rows] = cols\n", "        perm[cols] = rows\n",
           f"{T_MEASURES}::test_permutation_matching_recovers_the_steerable_permutation"),
    # training and the book
    Mutant("a resume restores no random state", "geed/training/checkpoints.py", '    if "torch" in rng:\n        torch.set_rng_state(rng["torch"])',
           '    if False:\n        torch.set_rng_state(rng["torch"])',
           "tests/training/test_fit.py::test_a_resumed_fit_with_dropout_ends_where_an_uninterrupted_one_does"),
    Mutant("after a corrupt checkpoint the later ones are kept", "geed/training/checkpoints.py", "        if s >= first:\n            checkpoint_path",
           "        if s == first:\n            checkpoint_path",
           "tests/training/test_digit_training.py::test_a_corrupt_checkpoint_of_a_finished_training_is_named_and_retrained"),
    Mutant("a resume from a checkpoint without training state", "geed/training/checkpoints.py",
           '            if "optimizer" not in state:\n                return -1, None\n', "",
           "tests/training/test_digit_training.py::test_a_corrupt_checkpoint_of_a_finished_training_is_named_and_retrained"),
    Mutant("an open lower bound accepted", "geed/report/parameters.py", "        if v < low or (low_open and v == low):", "        if v < low:",
           "tests/report/test_pipeline.py::test_a_bad_parameter_is_refused_before_anything_runs"),
    Mutant("a cache entry read without its checksum", "geed/report/cache.py", "        if hashlib.sha256(payload).hexdigest().encode() != digest:",
           "        if False:", "tests/report/test_cache_claims.py::test_corrupt_cache_entry_is_reported_and_recomputed"),
    Mutant("a failed chapter is published", "geed/report/book.py", "        if error or errs:\n            failed_dir.mkdir",
           "        if False:\n            failed_dir.mkdir", "tests/report/test_book.py::test_failing_chapter_is_not_published"),
    Mutant("parameter cells left in the page", "geed/report/book.py", 'cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})',
           'cell.metadata["tags"] = sorted(set(tags))', "tests/report/test_book.py::test_successful_chapter_is_published_with_parameter_cells_hidden"),
    # data, training objectives and the training loop
    Mutant("scikit-learn's digits keep the 9", OOD,
           'keep = d.target != 9',
           'keep = d.target != 10',
           'tests/data/test_digits_ood.py::test_scikit_learns_digits_are_classes_0_to_8'),
    Mutant('Omniglot read dark on light', OOD,
           'imgs = [1.0 - np.asarray(',
           'imgs = [0.0 + np.asarray(',
           'tests/data/test_digits_ood.py::test_external_sets_read_from_written_files'),
    Mutant("4.2's in-distribution set upright", OOD,
           '        return rotated_digits("test").subset(n, seed).x\n    if name.startswith',
           '        from geed.data.digits import load_digits\n        return load_digits("test").subset(n, seed).x\n    if name.startswith',
           'tests/data/test_digits_ood.py::test_the_in_distribution_set_of_section_42_is_the_set_section_41_measures'),
    Mutant('test patches cut from the training rows', PATCHES,
           'lo, hi = (0, cut - window) if split == "train" else (cut, h - window)',
           'lo, hi = (0, cut - window) if split == "train" else (0, h - window)',
           SEPARATE_ROWS),
    Mutant('orientation-free patches cut upright', PATCHES,
           'ROTATED = {"orientation-free": True, "upright-photos": False}',
           'ROTATED = {"orientation-free": False, "upright-photos": False}',
           'tests/data/test_patches.py::test_orientation_free_patches_are_turned_and_upright_ones_are_not'),
    Mutant('the fixed test patches cut from the training rows', PATCHES,
           'return self.sample(split, n, torch.Generator().manual_seed(10_007 * (seed + 1) + (split == "test")))',
           'return self.sample("train", n, torch.Generator().manual_seed(10_007 * (seed + 1) + (split == "test")))',
           SEPARATE_ROWS),
    Mutant("SimCLR's positive is the anchor itself", OBJECTIVES,
           'target = _on(model, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))',
           'target = _on(model, torch.cat([torch.arange(0, n), torch.arange(n, 2 * n)]))',
           NT_XENT),
    Mutant('SimCLR without its self-similarity mask', OBJECTIVES,
           'sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))',
           'sim = sim',
           NT_XENT),
    Mutant("SimCLR's positives shifted by one", OBJECTIVES,
           'target = _on(model, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))',
           'target = _on(model, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).roll(1))',
           NT_XENT),
    Mutant('DINO matches the teacher on the same view', OBJECTIVES,
           '(teacher[n:] * logp[:n]).sum(1).mean() + (teacher[:n] * logp[n:])',
           '(teacher[:n] * logp[:n]).sum(1).mean() + (teacher[n:] * logp[n:])',
           DINO_LOSS),
    Mutant("DINO's teacher not centred", OBJECTIVES,
           'teacher = F.softmax((t_out - self.center) / self.tt, dim=1)',
           'teacher = F.softmax(t_out / self.tt, dim=1)',
           DINO_LOSS),
    Mutant("DINO's temperatures swapped", OBJECTIVES,
           'self.ts, self.tt, self.m, self.cm = t_student, t_teacher, momentum, center_momentum',
           'self.ts, self.tt, self.m, self.cm = t_teacher, t_student, momentum, center_momentum',
           DINO_LOSS),
    Mutant("DINO's teacher momentum reversed", OBJECTIVES,
           'pt.mul_(self.m).add_((1 - self.m) * ps.detach())',
           'pt.mul_(1 - self.m).add_(self.m * ps.detach())',
           'tests/training/test_objectives.py::test_dinos_teacher_is_a_moving_average_of_the_student'),
    Mutant('the supervised loss skips its augmentation', OBJECTIVES,
           '        if self.augmentation is not None:\n            x = self.augmentation(x, gen)',
           '        if False:\n            x = self.augmentation(x, gen)',
           CROSS_ENTROPY),
    Mutant('the invariance penalty without its weight', OBJECTIVES,
           'loss = loss + self.invariance_weight * logit_invariance_penalty',
           'loss = loss + 0.0 * logit_invariance_penalty',
           CROSS_ENTROPY),
    Mutant('digit runs trained without rotations', LOOP,
           'objective = CrossEntropy(random_rotation if self.augment else None,',
           'objective = CrossEntropy(None,',
           'tests/training/test_digit_training.py::test_a_digit_run_trains_on_randomly_rotated_batches_when_augmented'),
    Mutant('supervised patch runs never augmented', LOOP,
           'objective: Objective = CrossEntropy(augment if self.augment else None)',
           'objective: Objective = CrossEntropy(None)',
           'tests/training/test_fit.py::test_a_supervised_patch_run_is_augmented_as_configured'),
    Mutant('the cosine schedule rises', LOOP,
           'return 0.5 * self.lr * (1 + math.cos(math.pi * (it - 1) / self.iterations))',
           'return 0.5 * self.lr * (1 - math.cos(math.pi * (it - 1) / self.iterations))',
           'tests/training/test_digit_training.py::test_the_cosine_schedule_starts_at_the_rate_and_decays_to_zero'),
    Mutant('accuracy in training mode', LOOP,
           '    """Fraction of ``x`` classified as ``y``, in batches on the model\'s device."""\n    model.eval()',
           '    """Fraction of ``x`` classified as ``y``, in batches on the model\'s device."""\n    model.train()',
           'tests/training/test_digit_training.py::test_accuracy_is_measured_in_evaluation_mode_and_changes_no_statistics'),
    Mutant('the self-supervised heads not optimised', LOOP,
           'params = list(model.parameters()) + [p for p in objective.parameters() if p.requires_grad]',
           'params = list(model.parameters())',
           'tests/training/test_fit.py::test_the_self_supervised_heads_are_trained'),
    Mutant('digit accuracy on the training data', LOOP,
           'return accuracy(kept, test_data) if test_data is not None else float("nan")',
           'return accuracy(kept, train_data) if test_data is not None else float("nan")',
           'tests/training/test_digit_training.py::test_training_is_seeded_resumable_and_reloadable'),
    # what the chapters measure, and their caches
    Mutant('a 1 x 1 map moved by rotations', 'geed/actions.py',
           'spatial_trivial_everywhere = shape is not None and int(shape[-1]) == 1 and int(shape[-2]) == 1',
           'spatial_trivial_everywhere = False',
           'tests/core/test_metrics.py::test_on_one_pixel_maps_every_rotation_is_in_the_kernel'),
    Mutant('one reference point accepted', 'geed/report/parameters.py',
           '"n_reference": _count(2),',
           '"n_reference": _count(1),',
           'tests/report/test_pipeline.py::test_the_normaliser_needs_two_reference_points'),
    Mutant('a width above 1 accepted', 'geed/report/parameters.py',
           '"width": _real(0.0, 1.0, low_open=True),',
           '"width": _real(0.0, None, low_open=True),',
           'tests/report/test_pipeline.py::test_a_bad_parameter_is_refused_before_anything_runs'),
    Mutant('a cache key without the code version', 'geed/report/cache.py',
           "fingerprint({'params': params, 'data': data, 'code': code_version()})",
           "fingerprint({'params': params, 'data': data})",
           'tests/report/test_cache_claims.py::test_a_result_of_other_code_is_never_reused'),
    Mutant("an array's shape not in its fingerprint", 'geed/report/cache.py',
           'h.update(str((o.shape, str(o.dtype))).encode())',
           'h.update(str(o.dtype).encode())',
           'tests/report/test_cache_claims.py::test_cache_roundtrip_and_key_changes'),
    Mutant("4.1's cache key without the group", 'geed/experiments/section41.py',
           'seed=params["seed"],\n                   group=params["group"])',
           'seed=params["seed"])',
           CACHE_KEYS),
    Mutant("4.2's cache key without the data sets", 'geed/experiments/section42.py',
           'seed=params["seed"], datasets=params["datasets"], untrained=seeds',
           'seed=params["seed"], untrained=seeds',
           CACHE_KEYS),
    Mutant('4.2 divides by the in-distribution M', 'geed/experiments/rotated_digits.py',
           'x, x_ref = pool[:n_points], pool[n_points:] if pool.shape[0] > n_points + 1 else pool',
           'x, x_ref = pool[:n_points], rotated_digits("test").subset(n_reference, seed + 1).x',
           'tests/experiments/test_rotated_digits_claims.py::test_out_of_distribution_the_normaliser_is_computed_on_each_data_set'),
    Mutant("4.2-7 against the untrained CNN's in-distribution value", 'geed/experiments/rotated_digits.py',
           'C.difference(v("CNN", "latent_l2", s), v("CNN", "latent_l2", IN_DISTRIBUTION)',
           'C.difference(v("CNN", "latent_l2", s), v("untrained CNN", "latent_l2", IN_DISTRIBUTION)',
           'tests/experiments/test_rotated_digits_claims.py::test_claim_42_7_places_the_trained_cnn_between_its_in_distribution_value_and_the_untrained_cnn'),
    Mutant("4.3's C8 on the flipped half of D8", 'geed/experiments/pretrained.py',
           'for group, sl in ((c8, slice(0, 8)), (d8, slice(None))):',
           'for group, sl in ((c8, slice(8, 16)), (d8, slice(None))):',
           'tests/experiments/test_pretrained_selfsup_claims.py::test_section_43_measures_c8_on_the_rotations_of_its_d8_orbit'),
    Mutant("4.3's pretrained runs start from scratch", 'geed/experiments/pretrained.py',
           'for init, (tag, fn) in zip(INITS, (("scratch", None), (label, init_body))):',
           'for init, (tag, fn) in zip(INITS, (("scratch", None), (label, None))):',
           'tests/experiments/test_pretrained_selfsup_claims.py::test_section_43_starts_the_pretrained_runs_from_the_pretrained_weights'),
    Mutant("4.4's M from the measured patches", 'geed/experiments/selfsup.py',
           'r = latent_eed(Z, flip, dist, normalise=True, reference_points=Z_ref)',
           'r = latent_eed(Z, flip, dist, normalise=True)',
           FLIP_EED_44),
    Mutant('4.4 under a half turn, not the mirror', 'geed/experiments/selfsup.py',
           'flip = get_group("flip")',
           'flip = get_group("C2")',
           FLIP_EED_44),
    # the chapter beyond the paper
    Mutant('M-1 with the models swapped', BEYOND,
           'C.compare(v(lvg, model="C8-CNN", group=gname, beta=b0, metric="SI"), v(lvg, model="augmentation CNN", group=gname, beta=b0, metric="SI"),',
           'C.compare(v(lvg, model="augmentation CNN", group=gname, beta=b0, metric="SI"), v(lvg, model="C8-CNN", group=gname, beta=b0, metric="SI"),',
           BEYOND_DIRECTIONS),
    Mutant('M-2 with the shifts swapped', BEYOND,
           'C.compare(v(lvg, model="augmentation CNN", group=gname, beta=b1, metric="DI"), v(lvg, model="augmentation CNN", group=gname, beta=b0, metric="DI"),',
           'C.compare(v(lvg, model="augmentation CNN", group=gname, beta=b0, metric="DI"), v(lvg, model="augmentation CNN", group=gname, beta=b1, metric="DI"),',
           BEYOND_DIRECTIONS),
    Mutant('K-4.2 with trained and untrained swapped', BEYOND,
           'C.difference(v(c, model="augmentation CNN", dataset=d), v(c, model="untrained CNN", dataset=d), f"trained - untrained [{d}]")',
           'C.difference(v(c, model="untrained CNN", dataset=d), v(c, model="augmentation CNN", dataset=d), f"trained - untrained [{d}]")',
           BEYOND_DIRECTIONS),
    Mutant('K-A.4 without the matched permutation', BEYOND,
           'v(per_model, model="augmentation CNN", variant="matched permutation")',
           'v(per_model, model="augmentation CNN", variant="declared action")',
           BEYOND_DIRECTIONS),
    Mutant('the regulariser tuned on test digits', BEYOND,
           'held_out = rotated_digits("train", seed=params["seed"] + 1)',
           'held_out = rotated_digits("test", seed=params["seed"] + 1)',
           'tests/experiments/test_beyond_tuning.py::test_the_si_target_is_measured_on_training_digits_held_out_from_every_evaluation'),
    # Section 3 and the book driver
    Mutant("the floor's no-mask rows measured with the mask", 'geed/experiments/section3.py',
           '                    g = get_group(gname, mask=mask)\n                    rep = ev.evaluate(model, x, g, channelwise',
           '                    g = get_group(gname, mask=True)\n                    rep = ev.evaluate(model, x, g, channelwise',
           'tests/experiments/test_rotated_digits_claims.py::test_long_measurements_report_progress'),
    Mutant("S3-3 compared on the unmasked setting", 'geed/experiments/section3.py',
           '(per_model.setting == "C8, masked")].deviation,\n                                    per_model[(per_model.model == "C8-CNN") & (per_model.setting == "C8, masked")]',
           '(per_model.setting == "C8, no mask")].deviation,\n                                    per_model[(per_model.model == "C8-CNN") & (per_model.setting == "C8, no mask")]',
           'tests/experiments/test_section3_claims.py::test_s3_3_compares_the_models_on_the_masked_c8_rows'),
    Mutant("S3-1 without the head's deviation", 'geed/experiments/section3.py',
           'C.exceeds([p31["f1 (feature extractor)"], p31["f2 (head)"]]', 'C.exceeds([p31["f1 (feature extractor)"]]', S3_EACH_FAILS),
    Mutant("S3-2 compares the models the other way", 'geed/experiments/section3.py',
           'C.compare(plain.value, inv[inv.metric == "latent_l2"].value', 'C.compare(inv[inv.metric == "latent_l2"].value, plain.value',
           'tests/experiments/test_section3_claims.py::test_every_claim_holds_on_tables_as_the_paper_states_them'),
    Mutant("S3-4's latent space never scaled", 'geed/experiments/section3.py',
           '            r = latent_eed(c * Z, g, "l2", normalise=normalise)',
           '            r = latent_eed(Z, g, "l2", normalise=normalise)',
           'tests/experiments/test_rotated_digits_claims.py::test_the_scale_table_scales_the_latent_space'),
    Mutant('a run that never recorded its claims goes on to publish', 'geed/report/book.py',
           '        if not error and not errs and not staged.exists():',
           '        if False:',
           'tests/report/test_book.py::test_a_chapter_that_never_records_its_run_is_not_published'),
    Mutant('the page carries another run id than its claims', 'geed/report/book.py',
           'nb.metadata["geed"] = {"run_id": run_id,',
           'nb.metadata["geed"] = {"run_id": "0" * 12,',
           'tests/report/test_pipeline.py::test_claims_are_published_with_the_page_and_a_failed_run_changes_neither'),
    # the zoo's weights and inputs, Section 4.3's sources and reference points, the charts and the ledger's page
    Mutant("inputs multiplied by the std", ZOO, "return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)",
           "return (x - self.mean.to(x.dtype)) * self.std.to(x.dtype)", ADAPTER),
    Mutant("a grey image read as red", ZOO, "x = x.expand(-1, 3, -1, -1)", "x = torch.cat([x, torch.zeros_like(x), torch.zeros_like(x)], 1)",
           ADAPTER),
    Mutant("ResNet50 standardised as BiT", ZOO, 'ZooSpec("resnet50", _resnet50, "4.3, 4.4", files=',
           'ZooSpec("resnet50", _resnet50, "4.3, 4.4", norm=HALF, files=',
           f"{T_ZOO}::test_each_architecture_is_standardised_as_its_published_weights_expect"),
    Mutant("DINO's student read", ZOO, 'for key in ("teacher", "state_dict", "model", "net"):',
           'for key in ("student", "teacher", "state_dict", "model", "net"):',
           f"{T_ZOO}::test_a_full_dino_checkpoint_gives_the_teacher_not_the_student"),
    Mutant("the environment's weights dir before the argument", ZOO, "dirs = [weights_dir, os.environ.get(WEIGHTS_ENV)]",
           "dirs = [os.environ.get(WEIGHTS_ENV), weights_dir]",
           f"{T_ZOO}::test_a_weights_dir_passed_as_argument_comes_before_the_environment"),
    Mutant("the HF cache's main ref ignored", ZOO, "named = snaps / ref.read_text().strip() if ref.is_file() else None", "named = None",
           f"{T_ZOO}::test_the_hf_cache_entry_is_read_at_the_revision_its_main_ref_names"),
    Mutant("LeViT's biases transposed", ZOO, "grid = b.reshape(1, b.shape[0], r0, r0).float()",
           "grid = b.reshape(1, b.shape[0], r0, r0).transpose(-1, -2).float()", BIAS_ORIENTATION),
    Mutant("LeViT's biases resized by the nearest value", ZOO, 'mode="bicubic", align_corners=False).reshape(shape)',
           'mode="nearest").reshape(shape)', BIAS_ORIENTATION),
    Mutant("4.3's auto source never published", PRETRAINED, 'if source in ("auto", "published"):', 'if source == "published":',
           f"{T_43}::test_section_43_takes_published_weights_when_a_file_is_there"),
    Mutant("4.3's M over the measured patches", PRETRAINED, 'x_ref, _ = task.fixed("test", n_reference, seed + 1)',
           'x_ref, _ = task.fixed("test", n_reference, seed)', f"{T_43}::test_section_43_normalises_by_the_test_patches_of_the_next_seed"),
    Mutant("4.3's changes measured from step 0", PRETRAINED, "first = C.baseline_step(steps)", "first = steps[0]",
           f"{T_43}::test_claims_43_compare_with_a_checkpoint_after_the_start_of_training"),
    Mutant("error bars up to the mean", CHARTS, 'bars = base.mark_rule(strokeWidth=2).encode(y="lo:Q", y2="hi:Q", **enc)',
           'bars = base.mark_rule(strokeWidth=2).encode(y="lo:Q", y2="mean:Q", **enc)',
           f"{T_CHARTS}::test_points_with_intervals_draw_the_mean_and_a_bar_from_lo_to_hi"),
    Mutant("bands from the mean", CHARTS, 'band = base.mark_area(opacity=0.25).encode(y=alt.Y("lo:Q"',
           'band = base.mark_area(opacity=0.25).encode(y=alt.Y("mean:Q"', f"{T_CHARTS}::test_lines_with_bands_draw_the_mean_and_a_band_from_lo_to_hi"),
    Mutant("image panels in alphabetical order", CHARTS, 'facet=alt.Facet("panel:N", sort=alt.SortField("order")', 'facet=alt.Facet("panel:N"',
           f"{T_CHARTS}::test_image_grid_keeps_each_image_upright_and_the_panels_in_order"),
    Mutant("the ledger's false-verdict column shows the power", LEDGER, "f\"<td>{_pct(r['false verdicts'])}</td>",
           "f\"<td>{_pct(r['power'])}</td>", LEDGER_ROWS),
    Mutant("holds shown in red", LEDGER, 'COLOURS = {claims.HOLDS: "#1a7f37", claims.FAILS: "#cf222e"',
           'COLOURS = {claims.HOLDS: "#cf222e", claims.FAILS: "#1a7f37"', f"{T_LEDGER}::test_holds_is_shown_in_green_and_does_not_hold_in_red"),
    Mutant("the ledger's counts without claims not tested", LEDGER, "columns=list(claims.STATUSES), dtype=int)",
           "columns=list(claims.STATUSES)[:3], dtype=int)", f"{T_LEDGER}::test_the_counts_give_every_verdict_per_chapter_and_in_all"),
    Mutant("the front page's headline is a chapter's first claim", "geed/report/book.py",
           "key = rows[rows.key].iloc[0] if rows.key.any() else rows.iloc[0]", "key = rows.iloc[0]", GLANCE_ROW),
    Mutant("the front page's figures not cut", "geed/report/book.py",
           'figures = figures if len(figures) <= 160 else figures[:157] + "..."', "figures = figures", GLANCE_ROW),
    Mutant("a | in a claim splits the front page's row", "geed/report/book.py", '.replace("|", "\\\\|")', "", GLANCE_ROW),
    # the digit models' equal terms, and the summaries behind every table and chart
    Mutant("field pooling by the mean", "geed/models/digits.py", "return x.view(b, c // self.order, self.order, h, w).amax(dim=2)",
           "return x.view(b, c // self.order, self.order, h, w).mean(dim=2)", f"{T_DIGITS}::test_field_pooling_is_e2cnns_group_pooling"),
    Mutant("no input mask", "geed/models/digits.py", "return x * self.mask.to(x.dtype)", "return x",
           f"{T_DIGITS}::test_both_families_see_only_the_disc_inscribed_in_the_input"),
    Mutant("the CNN's convolutions with a bias", "geed/models/digits.py",
           "layers: list[nn.Module] = [nn.Conv2d(prev, c, k, padding=p, bias=False)", "layers: list[nn.Module] = [nn.Conv2d(prev, c, k, padding=p, bias=True)",
           f"{T_DIGITS}::test_both_families_convolve_without_a_bias"),
    Mutant("the wide latent by the max", "geed/models/digits.py", "self.latent_wide(x.mean(dim=(2, 3)))", "self.latent_wide(x.amax(dim=(2, 3)))",
           f"{T_DIGITS}::test_the_cnns_wide_latent_is_the_spatial_mean_of_its_last_block"),
    Mutant("Prop. 3.1(2)'s features not averaged", "geed/models/digits.py",
           "z = torch.stack([self.model.features(self.group.act(x, i)) for i in range(len(self.group))]).mean(0)",
           "z = torch.stack([self.model.features(x) for i in range(len(self.group))]).mean(0)",
           f"{T_DIGITS}::test_the_averaged_feature_extractor_is_exactly_invariant"),
    Mutant("a summary's mean is the median", "geed/stats.py", '"mean": float(np.mean(vals))', '"mean": float(np.median(vals))', SUMMARISE),
    Mutant("a summary's sampling units swapped", "geed/stats.py",
           'lo, hi = t_interval(vals, level) if across == "models" else bootstrap_ci(vals, level)',
           'lo, hi = bootstrap_ci(vals, level) if across == "models" else t_interval(vals, level)', SUMMARISE),
    # how Sections 4.3 and 4.4 put their parts together
    Mutant("a pruned run measured without its steps", "geed/experiments/tracking.py",
           "if len(res.checkpoints) > 1 or res.config.iterations == 0:", "if True:", f"{T_WIRING}::test_a_pruned_run_is_trained_again_before_its_steps_are_measured"),
    Mutant("runs never pruned", "geed/experiments/tracking.py", "return res if self.keep or len(res.checkpoints) == 1 else prune(res)", "return res",
           f"{T_WIRING}::test_without_kept_checkpoints_each_run_is_pruned_once_measured"),
    Mutant("4.3's stand-ins inverted", "geed/experiments/section43.py", 'if not label.startswith("published")}', 'if label.startswith("published")}',
           WIRING_43),
    Mutant("4.3's cache key without n_reference", "geed/experiments/section43.py",
           'n_points=p["n_points"], n_reference=p["n_reference"], seed=p["seed"])', 'n_points=p["n_points"], seed=p["seed"])', WIRING_43),
    Mutant("4.3's pruned pretrained runs retrained from scratch", "geed/experiments/section43.py",
           "init_body=pretrained[1] if init == P.INITS[1] else None", "init_body=None", WIRING_43),
    Mutant("4.3's ImageNet architectures from the chapter's source", "geed/experiments/section43.py",
           'sources.update({a: P.pretrained_source(a, "published",', 'sources.update({a: P.pretrained_source(a, p["weights_source"],', WIRING_43),
    Mutant("4.4's cache key without n_reference", "geed/experiments/section44.py",
           'n_points=p["n_points"], n_reference=p["n_reference"], seed=p["seed"])', 'n_points=p["n_points"], seed=p["seed"])', WIRING_44),
    Mutant("4.4's starting point not measured", "geed/experiments/section44.py",
           '    if p["init"] == "imagenet":  # the starting point itself', '    if False:  # the starting point itself', WIRING_44),
    # the registry
    Mutant("the published names include the test variants", REGISTRY, "names = [n for n in zoo.zoo_models() if not zoo.split_name(n)[1]]",
           "names = [n for n in zoo.zoo_models()]", f"{T_REGISTRY}::test_patterns_and_published_weights"),
    Mutant("seed 0 refused", REGISTRY, "(not is_whole(seed) or seed < 0)", "(not is_whole(seed) or seed < 1)",
           f"{T_REGISTRY}::test_bad_names_and_arguments_are_named"),
    Mutant("a digit model's n_classes dropped", REGISTRY, '            kwargs["n_classes"] = n_classes\n', "            pass\n",
           f"{T_REGISTRY}::test_every_tiny_model_builds_seeded_and_classifies"),
    Mutant("an ImageNet model's seed ignored", REGISTRY, "n_classes=9 if n_classes is None else n_classes, seed=seed)",
           "n_classes=9 if n_classes is None else n_classes, seed=None)", f"{T_REGISTRY}::test_every_tiny_model_builds_seeded_and_classifies"),
    Mutant("a digit model said to have published weights", REGISTRY, "        if pretrained:\n            raise ValueError(f\"{name} has no published",
           "        if False:\n            raise ValueError(f\"{name} has no published", f"{T_REGISTRY}::test_bad_names_and_arguments_are_named"),
    Mutant("create_model's weights_dir ignored", REGISTRY, "zoo.load_pretrained(model, weights_dir=weights_dir)",
           "zoo.load_pretrained(model, weights_dir=None)", f"{T_REGISTRY}::test_published_weights_are_read_from_the_weights_dir_it_is_given"),
    # what the inputs survey reports, and the time estimates
    Mutant("full MNIST that does not load counted as found", INPUTS,
           'return Input("full MNIST (60,000 + 10,000 digits)", "Sections 3, 4.1, 4.2, beyond", False, f"{root}: {exc}", sub)',
           'return Input("full MNIST (60,000 + 10,000 digits)", "Sections 3, 4.1, 4.2, beyond", True, f"{root}: {exc}", sub)', SURVEY_DATA),
    Mutant("a missing OOD set counted as found", INPUTS, '            out.append(Input(f"OOD set {name}", "Section 4.2", False, str(exc),',
           '            out.append(Input(f"OOD set {name}", "Section 4.2", True, str(exc),', SURVEY_DATA),
    Mutant("AlexNet's weights not surveyed", INPUTS, '("alexnet", "Section 4.3"), ', "", SURVEY_WEIGHTS),
    Mutant("xView counted as found", INPUTS, 'Input("xView Maritime (overhead imagery)", "Section 4.3", False,',
           'Input("xView Maritime (overhead imagery)", "Section 4.3", True,', PAPER_REFUSES),
    Mutant("the missing inputs are those found", INPUTS, "if not i.found]", "if i.found]", PAPER_REFUSES),
    Mutant("a time estimate linear in the width", INPUTS, 'w *= float(params["width"]) ** 2', 'w *= float(params["width"])', ESTIMATES),
    Mutant("a time estimate blind to the iterations", INPUTS, 'w = float(params.get("n_models", 1)) * float(params.get("iterations", 1) or 1)',
           'w = float(params.get("n_models", 1))', ESTIMATES),
    Mutant("a time estimate scaled the wrong way", INPUTS, "return last_seconds * _work(params) / max(_work(last_params), 1e-9)",
           "return last_seconds * _work(last_params) / max(_work(params), 1e-9)", ESTIMATES),
    # the paper profile is the paper's protocol
    Mutant("paper: M over 100 points in 4.1", PAPER, "section41:\n  n_points: 50\n  n_reference: 200", "section41:\n  n_points: 50\n  n_reference: 100",
           PAPERS_PROTOCOL),
    Mutant("paper: the digit models trained 200 iterations", PAPER, "    iterations: 2000\n", "    iterations: 200\n", PAPERS_PROTOCOL),
    Mutant("paper: five digit models per family", PAPER, "    width: 1.0\n    n_models: 10\n", "    width: 1.0\n    n_models: 5\n", PAPERS_PROTOCOL),
    Mutant("paper: 4.3 recorded every 400 iterations", PAPER, "  record_every: 200", "  record_every: 400", PAPERS_PROTOCOL),
    Mutant("paper: three models per arm in 4.3", PAPER, "  n_models: 5\n", "  n_models: 3\n", PAPERS_PROTOCOL),
    Mutant("paper: 4.3 without LeViT", PAPER, "archs: [resnet50, alexnet, densenet121, levit_192]", "archs: [resnet50, alexnet, densenet121]",
           PAPERS_PROTOCOL),
    Mutant("paper: 4.3 never on published weights", PAPER, "weights_source: auto", "weights_source: offline", PAPERS_PROTOCOL),
    Mutant("paper: 4.4 over 50 inputs", PAPER, "  n_points: 100\n", "  n_points: 50\n", PAPERS_PROTOCOL),
    # how a group acts on a layer
    Mutant("a kernel blind to the channel maps", ACTIONS, "            if spatial_trivial and self._channels_trivial(i):", "            if spatial_trivial:",
           ONE_PIXEL_KERNEL),
    Mutant("an induced action's kernel read in the target group", ACTIONS, "return [i for i in range(len(self.group)) if self.hom[i] in inner]",
           "return sorted(inner)", f"{T_METRICS}::test_fhat_over_nontrivial_kernel"),
    Mutant("an induced action compares everywhere", ACTIONS, "        return self.target.region(y)\n", "        return None\n", SAME_AS_TENSORS),
    Mutant("C8 induced on C4 without taking angles modulo", ACTIONS, "hom.append(tg.index(Element(angle=(k * step_tgt) % 360, flip=e.flip)))",
           "hom.append(tg.index(Element(angle=(k * step_src) % 360, flip=e.flip)))", SAME_AS_TENSORS),
    Mutant("a permutation matrix read transposed", ACTIONS, "    return rounded.argmax(axis=1)", "    return rounded.argmax(axis=0)", REGULAR_FIELDS),
    Mutant("a field permuted by the inverse rotation", ACTIONS, "        k = int(round(k)) % n_rot\n", "        k = (-int(round(k))) % n_rot\n", REGULAR_FIELDS),
    Mutant("a masked group compares outside its disc", ACTIONS, "        if not self.group.mask:\n            return None", "        if True:\n            return None",
           REGULAR_FIELDS),
    # training augmentations
    Mutant("the photographs never flipped", AUGMENT, "flip = torch.rand(n, generator=gen) < 0.5", "flip = torch.rand(n, generator=gen) < 0.0", AUGMENTS),
    Mutant("the photographs flipped upside down", AUGMENT, "x.flip(-1), x)", "x.flip(-2), x)", AUGMENTS),
    Mutant("the photographs never cropped", AUGMENT, "scale = 0.7 + 0.3 * torch.rand(n, generator=gen)", "scale = 1.0 + 0.0 * torch.rand(n, generator=gen)",
           AUGMENTS),
    Mutant("jittered photographs not clipped", AUGMENT, "return ((x - mean) * contrast + mean * bright).clamp(0, 1)",
           "return ((x - mean) * contrast + mean * bright)", AUGMENTS),
    Mutant("digits rotated within a quarter turn", "geed/data/digits.py", "angles = torch.rand(x.shape[0], generator=generator) * 360.0",
           "angles = torch.rand(x.shape[0], generator=generator) * 90.0", WHOLE_CIRCLE),
    Mutant("one angle for a whole batch of digits", "geed/data/digits.py", "angles = torch.rand(x.shape[0], generator=generator) * 360.0",
           "angles = torch.rand(1, generator=generator).expand(x.shape[0]) * 360.0", WHOLE_CIRCLE),
    # the equivariance checks for tests
    Mutant("float32 counted exact to 1e-3", TESTING, "torch.float32: 1e-5,", "torch.float32: 1e-3,", S3_EACH_FAILS),
    Mutant("an invariance error divided by M", TESTING, "out[name] = r.value * r.normaliser  # unnormalised: an absolute distance",
           "out[name] = r.value  # unnormalised: an absolute distance", f"{T_DIGITS}::test_the_invariance_error_of_a_layer_is_an_absolute_distance"),
    Mutant("an equivariance error without the 1", TESTING, 'out = {name: 1.0 + rep[("channelwise", name)].value for name in (layers or {})}',
           'out = {name: rep[("channelwise", name)].value for name in (layers or {})}',
           f"{T_DIGITS}::test_every_registered_model_with_a_spatial_action_reads_minus_one_when_exactly_equivariant"),
    # what a chapter records
    Mutant("a chapter's provenance without its parameters", CHAPTER,
           '        rows += [(f"parameter {k}", json.dumps(v, default=str)) for k, v in self.params.items()]\n', "", PROVENANCE),
    Mutant("a chapter's run recorded without its parameters", CHAPTER, 'claims.start(name, {"profile": profile, "params": params,',
           'claims.start(name, {"profile": profile, "params": {},', PROVENANCE),
    Mutant("a chapter's headline claim not marked", CHAPTER, "claims.record(self.name, claim_id, source, claim, verdict, note, key=key)",
           "claims.record(self.name, claim_id, source, claim, verdict, note, key=False)", PROVENANCE),
    # the calibration's simulated configurations
    Mutant("a claim about some part simulated with the others for it", CALIBRATION, "            out[:] = -50.0\n            out[0] = 0.0",
           "            out[:] = 50.0\n            out[0] = 0.0", SOME_PART),
    Mutant("the power of a claim about some part planted in every part", CALIBRATION, '        if kind == "for_some":\n            out[0] = effect',
           '        if kind == "for_some":\n            out[:] = effect', SOME_PART),
    Mutant("a simulated contrast shifted by its weight", CALIBRATION, "groups[0] = groups[0] + shift[j] / w[0]", "groups[0] = groups[0] + shift[j] * w[0]",
           f"{T_CAL}::test_a_simulated_contrast_has_the_true_value_it_is_given"),
    Mutant("a claim of parts fails only when all its parts fail", CALIBRATION, "fails = np.any(codes == 2, axis=-1)", "fails = np.all(codes == 2, axis=-1)",
           f"{T_CAL}::test_a_claim_made_of_parts_is_simulated_as_the_ledger_combines_them"),
    Mutant("the detectable effect found half the time", CALIBRATION, "        if power(spec, e, n_sims=n_sims, seed=seed) >= target:",
           "        if power(spec, e, n_sims=n_sims, seed=seed) >= 0.5:", f"{T_CAL}::test_the_detectable_effect_is_the_smallest_on_the_grid_found_80_percent_of_the_time"),
    # the streamed evaluation: what it checks, how it reads a block, how it reports
    Mutant("M from the evaluated points despite reference points", ORBIT,
           '        M = {(lat, dist): _normaliser(given[lat], dist, block=_m_block(given[lat]), layer=lat)\n             for lat in latents for dist in ("l2", "cosine")}\n        del given',
           "        del given", f"{T_INPUTS}::test_wrong_inputs_and_models_are_refused_before_any_forward_pass"),
    Mutant("the two reference points' results swapped", ORBIT, 'suffixes = {ref: "" if ref == "orbit" else "@input" for ref in references}',
           'suffixes = {ref: "" if ref == "input" else "@input" for ref in references}', f"{T_METRICS}::test_without_channel_permutation_c8_model_looks_non_equivariant"),
    Mutant("a block's orbit read sample-major", ORBIT, "        Yb = _join(got).reshape(n_el, b, *t.shape[1:])",
           "        Yb = _join(got).reshape(b, n_el, *t.shape[1:]).transpose(0, 1)", f"{T_METRICS}::test_equivariant_map_has_zero_channelwise_deviation"),
    Mutant("a model measured in training mode", ORBIT, "    if switch:\n        model.eval()", "    if False:\n        model.eval()", TRAIN_MODE),
    Mutant("a model's modes not restored", ORBIT, "            for m, mode in modes:\n                m.train(mode)", "            pass", TRAIN_MODE),
    Mutant("oblong inputs accepted under quarter turns", ORBIT, "    quarter = any(e.angle % 180 == 90 for e in group.elements)",
           "    quarter = any(e.angle == 90 for e in group.elements[:1])", f"{T_INPUTS}::test_non_square_inputs_are_refused_under_quarter_turns_only"),
    Mutant("the finiteness of the inputs checked all at once", ORBIT, "    rows = max(1, FINITE_BLOCK // max(1, x[0].numel()))",
           "    rows = x.shape[0]", FINITE_BLOCKS),
    Mutant("the last block of samples not checked for finiteness", ORBIT, "    for start in range(0, x.shape[0], rows):",
           "    for start in range(0, x.shape[0] - rows, rows):", FINITE_BLOCKS),
    Mutant("bad samples named by their place in the block", ORBIT, "        finite[start : start + part.shape[0]] =",
           "        finite[: part.shape[0]] =",
           FINITE_BLOCKS),
    Mutant("inputs with NaN accepted", ORBIT, '                         f"got inputs of {h} x {w} (crop or pad them to a square first)")\n    _check_finite(x, "inputs")',
           '                         f"got inputs of {h} x {w} (crop or pad them to a square first)")',
           f"{T_INPUTS}::test_wrong_inputs_and_models_are_refused_before_any_forward_pass"),
    Mutant("progress's time left from the samples done", ORBIT, 'left = (self.total - done) / rate if rate > 0 else float("inf")',
           'left = done / rate if rate > 0 else float("inf")', "tests/core/test_orbit_streaming.py::test_progress_reports_rate_and_time_left_and_is_off_by_default"),
    Mutant("the automatic chunk ignores the memory budget", ORBIT, "return int(max(1, min(cap, budget // max(per_input, 1))))", "return int(max(1, cap))",
           "tests/core/test_orbit_streaming.py::test_the_automatic_chunk_follows_the_memory_budget"),
    Mutant("a summary's interval upside down", ORBIT, 'rows.append({"metric": m, "layer": layer, "value": r.value, "lo": lo, "hi": hi,',
           'rows.append({"metric": m, "layer": layer, "value": r.value, "lo": hi, "hi": lo,', f"{T_METRICS}::test_per_sample_values_and_bootstrap_interval"),
    Mutant("reduced-precision convolutions left on", ORBIT, '            setattr(holder, name, False if name == "allow_tf32" else "ieee")', "            pass",
           f"{T_INPUTS}::test_measuring_runs_in_full_float32_and_gives_the_callers_precision_back"),
    Mutant("latent G-EED streamed against f(x) only", ORBIT,
           '                    add((f"latent_{dist}" + sfx, lat), _pair_values(joined[lat], trivial, dist, ref), b)',
           '                    add((f"latent_{dist}" + sfx, lat), _pair_values(joined[lat], trivial, dist, "input"), b)',
           f"{T_METRICS}::test_orbit_reference_vs_input_reference_differ_for_non_invariant_model"),
    Mutant("the unnormalised cosine reads the l2 values", ORBIT, '_latent_result(values[("latent_cosine" + sfx, lat)], group,\n',
           '_latent_result(values[("latent_l2" + sfx, lat)], group,\n', NOT_POSITIVE),
    # what waits for a GPU, and the GPU's kernel (run on a CPU through Triton's interpreter)
    Mutant("the orbit mean indexes the kernel with a list made on the host", METRICS,
           "    kernel = Y[ker[0] : ker[-1] + 1] if ker == list(range(ker[0], ker[-1] + 1)) else torch.stack([Y[k] for k in ker])",
           "    kernel = Y[ker]", "tests/core/test_orbit_streaming.py::test_an_evaluation_makes_no_tensor_from_host_data"),
    Mutant("M's sums computed again after the values are read", ORBIT,
           "        totals = torch.stack([t for _, t in sums.values()]).tolist()  # one read",
           "        totals = [float(_pairwise_total(identity[lat], dist)[1]) for lat, dist in sums]",
           "tests/core/test_orbit_streaming.py::test_the_normalisers_sums_are_queued_before_any_value_is_read"),
    Mutant("the GPU kernel reads f(g x) of another (sample, element) pair", "geed/_fused_cuda.py",
           "            y_row = ((g.to(tl.int64) * N + n) * C + c) * S", "            y_row = (pid.to(tl.int64) * C + c) * S",
           "tests/core/test_fused_cuda.py::test_the_kernel_gives_the_tensor_paths_values_and_conventions"),
    # what a chapter's text quotes
    Mutant("4.1 quotes the CNN's accuracy as the C8-CNN's", "geed/experiments/section41.py", '"acc_c8": f"{acc[\'C8-CNN\']:.1%}"',
           '"acc_c8": f"{acc[\'CNN\']:.1%}"', QUOTES_41),
    Mutant("4.1 quotes dead shares over every step", "geed/experiments/section41.py", "    final = rd._final(track)\n", "    final = track\n", QUOTES_41),
    Mutant("3 quotes the floor of the unmasked rows", "geed/experiments/section3.py",
           'masked = floor_sum[(floor_sum.model == model) & (floor_sum.setting == "C8, masked")]["mean"]',
           'masked = floor_sum[(floor_sum.model == model) & (floor_sum.setting == "C8, no mask")]["mean"]',
           "tests/experiments/test_rotated_digits_claims.py::test_section3_quotes_the_floor_of_the_c8_cnn_under_masked_c8_and_its_c4_deviation"),
    Mutant("4.3 quotes the range of single models", "geed/experiments/section43.py", 'means = tables["accuracies"].groupby(["arch", "init"])["accuracy"].mean()',
           'means = tables["accuracies"]["accuracy"]', f"{T_43}::test_section_43_quotes_the_range_of_its_arms_mean_accuracies"),
    # how the groups act
    Mutant("the flip after the rotation", GROUPS, "        if e.flip:\n            out = torch.flip(out, dims=(-1,))\n        if e.angle % 360:\n            out = rotate(out, e.angle)\n",
           "        if e.angle % 360:\n            out = rotate(out, e.angle)\n        if e.flip:\n            out = torch.flip(out, dims=(-1,))\n", f"{T_GROUPS}::test_composition_law_exact"),
    Mutant("the flip upside down", GROUPS, "            out = torch.flip(out, dims=(-1,))", "            out = torch.flip(out, dims=(-2,))",
           f"{T_GROUPS}::test_the_action_on_images_and_on_regular_fields_is_e2cnns"),
    Mutant("the orbit without the input mask", GROUPS, "        base = self._masked(x)\n", "        base = x\n", SAME_AS_TENSORS),
    Mutant("quarter turns clockwise", GROUPS, "return torch.rot90(x, int(round(quarter)) % 4, dims=(-2, -1))",
           "return torch.rot90(x, -int(round(quarter)) % 4, dims=(-2, -1))", REGULAR_FIELDS),
    Mutant("rotations in the grid's normalised coordinates", GROUPS,
           "mat = torch.tensor([[[c, -s * h / w, 0.0], [s * w / h, c, 0.0]]], dtype=dtype, device=device)",
           "mat = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=dtype, device=device)",
           f"{T_GROUPS}::test_an_interpolated_rotation_of_an_oblong_image_keeps_distances_in_pixels"),
    Mutant("an element found whatever its flip", GROUPS, ") and e.flip == element.flip and e.shift == element.shift:", ") and e.shift == element.shift:",
           f"{T_GROUPS}::test_composition_law_exact"),
    Mutant("every element its own inverse", GROUPS, "            if self.compose(i, j) == 0:\n                return j", "            if j == i:\n                return j",
           f"{T_GROUPS}::test_identity_first_and_inverses"),
    Mutant("translations by one pixel whatever the step", GROUPS, "        self.elements = [Element(shift=self.step * k) for k in range(self.n)]",
           "        self.elements = [Element(shift=k) for k in range(self.n)]", f"{T_GROUPS}::test_composition_law_exact"),
    Mutant("every copy of the orbit permuted as the first", GROUPS, "torch.index_select(moved, -3, channels[i].to(moved.device), out=out[i])",
           "torch.index_select(moved, -3, channels[0].to(moved.device), out=out[i])", REGULAR_FIELDS),
    Mutant("45 degrees counted exact", GROUPS, "return all(abs((e.angle / 90) - round(e.angle / 90)) < 1e-12 for e in self.elements)",
           "return all(abs((e.angle / 45) - round(e.angle / 45)) < 1e-12 for e in self.elements)", f"{T_GROUPS}::test_identity_first_and_inverses"),
    # how Sections 4.1 and 4.2 measure the digit models
    Mutant("M over the measured digits themselves", RD, "return data.subset(n_points, seed).x, data.subset(n_reference, seed + 1).x",
           "return data.subset(n_points, seed).x, data.subset(n_reference, seed).x", TRACKED),
    Mutant("the digit models tracked without the input mask", RD, "    g = get_group(group, mask=True)\n    rows = []\n    for step, path",
           "    g = get_group(group, mask=False)\n    rows = []\n    for step, path", TRACKED),
    Mutant("only the last checkpoint tracked", RD, "    for step, path in sorted(res.checkpoints.items()):", "    for step, path in sorted(res.checkpoints.items())[-1:]:", TRACKED),
    Mutant("4.2's M over the measured points", RD, "            rep = ev.evaluate(model, x, group, latent=model.latent_layer, reference_points=x_ref)",
           "            rep = ev.evaluate(model, x, group, latent=model.latent_layer, reference_points=x)", OOD_M),
    Mutant("4.2's untrained CNN a C8-CNN", RD, 'models.append(("untrained CNN", s, create_model("cnn", width=width, seed=s)',
           'models.append(("untrained CNN", s, create_model("c8cnn", width=width, seed=s)', OOD_M),
    Mutant("4.1's final models at their first step", RD, '    last = track.groupby(["family", "seed"])["step"].transform("max")',
           '    last = track.groupby(["family", "seed"])["step"].transform("min")', "tests/experiments/test_rotated_digits_claims.py::test_claims_41_follow_the_numbers"),
    Mutant("4.1's models paired by row order", RD, '    return sel.sort_values("seed")["value"]', '    return sel["value"]',
           "tests/experiments/test_rotated_digits_claims.py::test_the_verdicts_of_41_do_not_depend_on_the_order_of_the_tables_rows"),
]

_SKIP = {".git", ".cache", "_build", "build", "__pycache__", ".pytest_cache", ".venv", ".whl"}


def _copy_project(dest: Path) -> None:
    """The tracked files (git ls-files), or, outside a git checkout, the tree without caches and builds."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if n in _SKIP])
        return
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def site_count(m: Mutant, root: Path = ROOT) -> int:
    """How often the mutant's lines occur in its file (1 when it applies)."""
    path = root / m.path
    return path.read_text().count(m.old) if path.exists() else 0


def run(mutants: list[Mutant], out=print) -> dict[str, list[str]]:
    """Apply each mutant alone in a copy of the project and run its test; returns the names of those
    caught, survived (their test passed) and drifted (their lines are no longer in the source)."""
    result: dict[str, list[str]] = {"caught": [], "survived": [], "drifted": []}
    with tempfile.TemporaryDirectory(prefix="geed-mutants-") as tmp:
        copy = Path(tmp)
        _copy_project(copy)
        env = {**os.environ, "PYTHONPATH": str(copy) + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
        where = subprocess.run([sys.executable, "-c", "import geed; print(geed.__file__)"], cwd=copy, env=env,
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(copy)):
            raise SystemExit(f"the copy's geed is not the one imported (got {where!r}); is another geed first on the path?")
        # a test that fails without any mutant would count every mutant as caught: they must pass first
        tests = sorted({m.test for m in mutants})
        out(f"running the {len(tests)} named tests on the unbroken copy first")
        base = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=copy, env=env,
                              capture_output=True, text=True)
        if base.returncode != 0:
            raise SystemExit("the named tests do not pass on the unbroken code, so a failure would not show a catch:\n"
                             + "\n".join((base.stdout + base.stderr).strip().splitlines()[-15:]))
        for i, m in enumerate(mutants, 1):
            count = site_count(m, copy)
            if count != 1:
                result["drifted"].append(m.name)
                out(f"[{i}/{len(mutants)}] {m.name}: DRIFTED (its lines occur {count} times in {m.path})")
                continue
            path = copy / m.path
            src = path.read_text()
            path.write_text(src.replace(m.old, m.new))
            start = time.time()
            try:
                r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", m.test], cwd=copy, env=env,
                                   capture_output=True, text=True)
            finally:
                path.write_text(src)
            caught = r.returncode == 1  # 1: tests failed; 0 passed; anything else (no test collected, an error) is not a catch
            if r.returncode not in (0, 1):
                tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
                out(f"    (pytest exit status {r.returncode}: {tail[0]})")
            result["caught" if caught else "survived"].append(m.name)
            out(f"[{i}/{len(mutants)}] {m.name}: {'caught' if caught else 'SURVIVED'} by {m.test} ({time.time() - start:.0f} s)")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the mutants and their tests, and stop")
    ap.add_argument("-k", metavar="WORD", help="only the mutants whose name contains WORD")
    ap.add_argument("--file", metavar="PATH", action="append", help="only the mutants of this file (may be given again)")
    args = ap.parse_args()
    unknown = sorted(set(args.file or ()) - {m.path for m in MUTANTS})
    if unknown:
        ap.error(f"no mutant breaks {', '.join(unknown)}; --list shows the files they break")
    chosen = [m for m in MUTANTS if (args.k is None or args.k.lower() in m.name.lower()) and (not args.file or m.path in args.file)]
    if not chosen:
        ap.error(f"no mutant's name contains {args.k!r}" + (f" among those of {', '.join(args.file)}" if args.file else "")
                 + "; --list shows them")
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.path} -> {m.test}")
        return 0
    result = run(chosen)
    print(f"{len(result['caught'])} of {len(chosen)} caught; survived: {result['survived'] or 'none'}; drifted: {result['drifted'] or 'none'}")
    return 0 if len(result["caught"]) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
