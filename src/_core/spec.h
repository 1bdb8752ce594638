// Speculative decoding's parts that know nothing of the engine: the n-gram
// drafter, a sequence's acceptance record, the step-cost line and the choice
// of draft lengths. The engine (engine_spec.cpp) puts the chosen drafts in its
// batch and verifies them.
//
// Why speculation pays on a CPU: a decode step reads every weight once
// whatever its row count, so rows beside the first cost less than the first
// (the step's time is `fixed_ms + row_ms * rows`, fixed_ms > 0). A draft
// token accepted is a token for `row_ms`; one rejected costs `row_ms` for
// nothing. How many to draft therefore depends on how often this sequence's
// drafts are right and on what a row costs now, both measured here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llama.h"

namespace sarai {

// The engine's speculation settings (Engine::set_speculation).
struct SpecConfig {
    // Default draft limit of a request that names none; 0: requests do not
    // speculate unless they ask (Request::draft_max > 0).
    int32_t n_max = 0;
    // The fewest tokens drafted whenever the lookup proposes that many, whatever
    // the measured costs say: n_min = n_max drafts every proposal whole (as
    // llama-server does); 0 lets acceptance and costs decide alone.
    int32_t n_min = 0;
    // n-gram size looked up (llama.cpp's ngram-simple size_n): the last n tokens
    // are searched for in the sequence's earlier context, and what followed
    // their most recent earlier occurrence is the draft.
    int32_t ngram_n = 3;
};

// The most draft tokens a step may carry for one sequence (a batch's rows
// beyond this would only make one step long).
constexpr int32_t kMaxDraft = 256;

// Checks a configuration (InvalidArgument naming the field).
void validate_spec_config(const SpecConfig &c);
// Checks a request's own limits: -1 (the engine's) or [0, kMaxDraft].
void validate_draft_limits(int32_t draft_max, int32_t draft_min);

// What followed the most recent earlier occurrence of the last `n` tokens of
// `history` + `last`: `n_max` tokens, empty when the key never occurred before.
// llama.cpp's ngram-simple lookup (common/ngram-map.cpp) finds the same
// occurrence but proposes nothing when fewer than n tokens follow it (inside a
// run of one token or a short period: a list, a table, a loop) and nothing
// before the history holds n + n_max + 1 tokens; this one copies on past the
// history's end from its own output (an overlapping copy, as LZ77), so those
// draft in full.
std::vector<llama_token> ngram_draft(const std::vector<llama_token> &history, llama_token last, int32_t n,
                                     int32_t n_max);

// A sequence's record of how often its proposals are right. Every token the
// sequence emits is compared with the proposal made before it (used as a
// draft or not: an unused proposal is checked for free), so a sequence that
// stopped drafting notices when its text turns repetitive again.
class Acceptance {
  public:
    void reset();
    // A new proposal for the tokens after the current one (replaces the last).
    void propose(std::vector<llama_token> proposal);
    // The sequence emitted `tok`: a match moves along the proposal, a miss ends it.
    void observe(llama_token tok);
    // Probability that a proposed token is right given that the ones before it were.
    double p() const;
    const std::vector<llama_token> &proposal() const { return proposal_; }

  private:
    std::vector<llama_token> proposal_;
    size_t pos_ = 0;
    double hits_ = 0.0, misses_ = 0.0;  // decayed counts
};

// The line `step ms = fixed_ms + row_ms * rows` over decode-only steps (no
// prompt rows), fitted by exponentially weighted least squares, so it follows
// the model, the machine, the threads and the context's length.
class StepCostLine {
  public:
    void observe(int32_t rows, double ms);
    bool known() const { return w_ > 0.0; }
    // The line planning uses. Until the row counts seen vary enough to fit a
    // slope, a row is taken to cost half of an average row (the last fitted
    // share once one was fitted), so drafting is tried and teaches the slope.
    double row_ms() const;
    double fixed_ms() const;
    double predict(int32_t rows) const { return fixed_ms() + row_ms() * rows; }
    // Whether the recent steps' row counts vary enough to fit the slope now. When they
    // do not, row_ms() is a guess or an old fit, which a step with a draft row refreshes.
    bool slope_current() const;

  private:
    double w_ = 0.0, sx_ = 0.0, sy_ = 0.0, sxx_ = 0.0, sxy_ = 0.0;
    double row_share_ = 0.5;  // row_ms / (mean ms / mean rows): the last fitted value
};

// One generating sequence's candidate draft for a step.
struct DraftCandidate {
    double p = 0.0;        // Acceptance::p()
    int32_t n_avail = 0;   // proposal tokens that may be drafted (limits applied)
    int32_t n_min = 0;     // drafted whatever the costs (up to n_avail)
    int32_t chosen = 0;    // out: tokens to draft
};

// Draft lengths that maximize the step's expected tokens per ms: the j-th
// token of a draft adds p^j expected tokens and `row_ms`, so tokens are taken
// best first while each adds more than the step's current tokens per ms would
// give for its cost, after each candidate's floor (n_min). `n_gen` sequences
// each produce one token anyway; the step's rows may not pass `max_rows`, nor
// (beyond the floors) its predicted time `max_ms` (<= 0: no limit).
// While the cost line's slope is not current, a candidate whose proposals have
// been right clearly more often than not (p >= 0.7) drafts at least one token: otherwise a slope fitted
// too steep (a noisy step) would stop all drafting, and with it the steps of
// several rows that would correct it.
void choose_draft_lengths(std::vector<DraftCandidate> &cands, const StepCostLine &cost, int32_t n_gen,
                          int32_t max_rows, double max_ms);

}  // namespace sarai
