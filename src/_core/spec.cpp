#include "spec.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "errors.h"

namespace sarai {

namespace {

// Decay of a sequence's acceptance counts per compared token: the record
// follows the last ~20 tokens, so it turns within a sentence when a copied
// passage ends (or starts).
constexpr double kAcceptDecay = 0.95;
// The prior a new request starts from: even odds, worth one token.
constexpr double kAcceptPrior = 0.5, kAcceptPriorWeight = 1.0;
// Decay of the step-cost sums per observed step: the line follows the last
// ~20 decode steps (the context grows, the load changes).
constexpr double kCostDecay = 0.95;
// Row counts must vary this much (their weighted variance) before a slope is
// fitted: e.g. a quarter of the steps with one row more than the others.
constexpr double kMinRowVariance = 0.2;
// A fitted row cost is kept within [5%, 100%] of the average row's cost: a row
// is never free (noise can fit a zero or negative slope) and never costs more
// than the average (which would mean a negative fixed cost).
constexpr double kMinRowShare = 0.05, kMaxRowShare = 1.0;
// A candidate explores the slope (spec.h) only while its proposals are right at
// least this often: above the prior (0.5), so only after its own proposals (used
// or not) were right more than wrong; a sequence writing free text pays nothing.
constexpr double kExploreMinP = 0.7;

void check_limit(const char *name, int32_t v, int32_t lo) {
    if (v < lo || v > kMaxDraft)
        throw InvalidArgument(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                              std::to_string(kMaxDraft) + "]" + (lo < 0 ? " (-1: the engine's default)" : "") +
                              ", not " + std::to_string(v));
}

}  // namespace

void validate_spec_config(const SpecConfig &c) {
    check_limit("draft_max", c.n_max, 0);
    check_limit("draft_min", c.n_min, 0);
    // A longer key only finds a copied passage later than a shorter one would.
    if (c.ngram_n < 1 || c.ngram_n > 64) throw InvalidArgument("ngram size must be in [1, 64], not " + std::to_string(c.ngram_n));
}

void validate_draft_limits(int32_t draft_max, int32_t draft_min) {
    check_limit("draft_max", draft_max, -1);
    check_limit("draft_min", draft_min, -1);
}

std::vector<llama_token> ngram_draft(const std::vector<llama_token> &history, llama_token last, int32_t n,
                                     int32_t n_max) {
    // The sequence is history + last; its last n tokens are the key.
    const size_t len = history.size() + 1, key = (size_t)std::max(n, 1);
    std::vector<llama_token> draft;
    if (n_max <= 0 || len < key + 1) return draft;
    auto at = [&](size_t i) { return i + 1 < len ? history[i] : last; };
    const size_t key_at = len - key;
    // The most recent earlier start j whose n tokens equal the key (j + n < len:
    // something follows it), checked from its last token, which differs most often.
    for (size_t j = key_at; j-- > 0;) {
        if (at(j + key - 1) != last) continue;
        size_t k = 0;
        while (k + 1 < key && at(j + k) == at(key_at + k)) ++k;
        if (k + 1 < key) continue;
        // Copy what followed; past the sequence's end the copy reads its own
        // output (as LZ77 does), so a run or a short period drafts in full.
        draft.reserve((size_t)n_max);
        for (size_t i = 0; i < (size_t)n_max; ++i) {
            const size_t src = j + key + i;
            draft.push_back(src < len ? at(src) : draft[src - len]);
        }
        return draft;
    }
    return draft;
}

void Acceptance::reset() {
    proposal_.clear();
    pos_ = 0;
    hits_ = misses_ = 0.0;
}

void Acceptance::propose(std::vector<llama_token> proposal) {
    proposal_ = std::move(proposal);
    pos_ = 0;
}

void Acceptance::observe(llama_token tok) {
    if (pos_ >= proposal_.size()) return;  // no live proposal: nothing to learn
    hits_ *= kAcceptDecay;
    misses_ *= kAcceptDecay;
    if (proposal_[pos_] == tok) {
        hits_ += 1.0;
        ++pos_;
    } else {
        misses_ += 1.0;
        proposal_.clear();
        pos_ = 0;
    }
}

double Acceptance::p() const {
    return (hits_ + kAcceptPrior * kAcceptPriorWeight) / (hits_ + misses_ + kAcceptPriorWeight);
}

void StepCostLine::observe(int32_t rows, double ms) {
    if (rows <= 0 || !(ms > 0.0)) return;
    const double x = rows;
    if (known()) {
        // A step slowed by another process says little about the model (as the
        // engine's other cost averages: within half to twice the prediction).
        const double pred = predict(rows);
        ms = std::clamp(ms, 0.5 * pred, 2.0 * pred);
    }
    w_ = kCostDecay * w_ + 1.0;
    sx_ = kCostDecay * sx_ + x;
    sy_ = kCostDecay * sy_ + ms;
    sxx_ = kCostDecay * sxx_ + x * x;
    sxy_ = kCostDecay * sxy_ + x * ms;
    const double mx = sx_ / w_, my = sy_ / w_;
    const double var = sxx_ / w_ - mx * mx;
    if (var >= kMinRowVariance) {
        const double slope = (sxy_ / w_ - mx * my) / var;
        row_share_ = std::clamp(slope / (my / mx), kMinRowShare, kMaxRowShare);
    }
}

bool StepCostLine::slope_current() const {
    if (!known()) return false;
    const double mx = sx_ / w_;
    return sxx_ / w_ - mx * mx >= kMinRowVariance;
}

double StepCostLine::row_ms() const {
    if (!known()) return 0.0;
    return row_share_ * (sy_ / sx_);  // the share of the average row's cost
}

double StepCostLine::fixed_ms() const {
    if (!known()) return 0.0;
    return std::max(0.0, sy_ / w_ - row_ms() * (sx_ / w_));
}

void choose_draft_lengths(std::vector<DraftCandidate> &cands, const StepCostLine &cost, int32_t n_gen,
                          int32_t max_rows, double max_ms) {
    const double row = cost.row_ms();
    double tokens = n_gen, ms = cost.predict(n_gen);
    int32_t rows = n_gen;
    // The next token of each candidate's draft adds p^(chosen+1) expected tokens.
    std::vector<double> gain(cands.size());
    for (size_t i = 0; i < cands.size(); ++i) {
        auto &c = cands[i];
        // The floor first: the caller asked for at least n_min tokens whatever they cost.
        c.chosen = std::max(0, std::min({c.n_min, c.n_avail, max_rows - rows}));
        rows += c.chosen;
        gain[i] = c.p;
        for (int32_t j = 0; j < c.chosen; ++j) {
            tokens += gain[i];
            ms += row;
            gain[i] *= c.p;
        }
    }
    // The first step measures a plain step's cost: until then only floors are drafted.
    if (!cost.known() || n_gen <= 0 || !(row > 0.0) || !(ms > 0.0)) return;
    if (!cost.slope_current()) {  // one exploring row each, within the limits (see spec.h)
        for (size_t i = 0; i < cands.size() && rows < max_rows; ++i) {
            auto &c = cands[i];
            if (c.chosen > 0 || c.n_avail <= 0 || c.p < kExploreMinP) continue;
            if (max_ms > 0.0 && ms + row > max_ms) break;
            c.chosen = 1;
            tokens += gain[i];
            gain[i] *= c.p;
            ms += row;
            rows++;
        }
    }
    while (rows < max_rows) {
        size_t best = cands.size();
        for (size_t i = 0; i < cands.size(); ++i)
            if (cands[i].chosen < cands[i].n_avail && (best == cands.size() || gain[i] > gain[best])) best = i;
        if (best == cands.size()) break;
        const double g = gain[best];
        if (max_ms > 0.0 && ms + row > max_ms) break;
        // Worth a row only if it brings more tokens per ms than the step already does.
        if (g / row <= tokens / ms) break;
        cands[best].chosen++;
        gain[best] *= cands[best].p;
        tokens += g;
        ms += row;
        rows++;
    }
}

}  // namespace sarai
