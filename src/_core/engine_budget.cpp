// The step budget: while some sequences generate, a step takes only as many
// prompt tokens as fit in step_budget_ms beside them, from costs measured step
// by step (learn_costs); and which prompts get a step's room first (order_prompts).
// Called from step() (engine.cpp) with the lock held.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "engine.h"
#include "engine_slot.h"
#include "errors.h"

namespace sarai {

namespace {

// Step budget constants (see Engine::prompt_budget_locked and learn_costs).
// The fewest prompt tokens a budgeted step takes: a prompt always advances, even
// when the target is below one decode step's own time (a slow machine, a tiny
// target), and a chunk this large is also the smallest that teaches the prompt
// cost (the error of the logits rows' estimate is divided by the chunk's size).
constexpr int32_t kMinPromptChunk = 16;
// Weight of a new step in the running cost averages: a quarter follows a
// prompt's cost growing with its position within a few steps, and a step
// slowed by another process on a shared machine moves the average by a quarter only.
constexpr double kCostAlpha = 0.25;

}  // namespace

int32_t Engine::prompt_budget_locked(int32_t n_gen) const {
    const int32_t room = std::max<int32_t>(0, (int32_t)n_batch_ - n_gen);
    if (step_budget_ms_ <= 0.0 || n_gen == 0) return room;
    // Unmeasured prompt cost: a small first chunk, whose time teaches it.
    if (prompt_token_ms_ <= 0.0) return std::min(room, kMinPromptChunk);
    // What the target leaves after the generating rows, in prompt tokens; but never
    // less than the rows' own time. On a machine too busy for the target (the rows
    // alone take it: other processes, a CPU quota), a prompt read 16 tokens a step
    // would take minutes (measured: 2,000 tokens in 109 s instead of 13 s); this way
    // the prompt and the streams share each step half and half.
    const double rows_ms = logits_row_ms_ * n_gen;
    const double left = std::max(step_budget_ms_ - rows_ms, rows_ms);
    const double fit = std::floor(left / prompt_token_ms_);
    const int32_t budget = fit >= (double)room ? room : std::max(kMinPromptChunk, (int32_t)std::max(0.0, fit));
    return std::min(room, budget);
}

int32_t Engine::prompt_budget(int32_t n_gen) const {
    std::lock_guard<std::mutex> lock(mu_);
    return prompt_budget_locked(std::max(0, n_gen));
}

void Engine::learn_costs(int32_t n_logits, int32_t n_plain, double ms) {
    // The cost model: a step's time = logits_row_ms * (rows whose logits are
    // sampled: generating rows and the last token of a prompt) + prompt_token_ms *
    // (the other prompt rows). Logits rows cost more (the output layer over the
    // whole vocabulary, then sampling) and a decode-only step's time is mostly
    // reading the weights once, which that row count shares; measured on this
    // model, machine and thread count, step by step, so no constant is guessed.
    auto update = [](double &avg, double x) {
        if (avg <= 0.0) {
            avg = x;
            return;
        }
        // A step slowed by something else (another process took a core and ggml's
        // threads waited for it) says little about the model: a sample counts as at
        // most twice, at least half the average, so one outlier moves it by a quarter.
        avg += kCostAlpha * (std::clamp(x, 0.5 * avg, 2.0 * avg) - avg);
    };
    if (n_plain == 0) {
        if (n_logits > 0) update(logits_row_ms_, ms / n_logits);
        return;
    }
    if (n_plain < kMinPromptChunk) return;  // too few tokens to tell their cost from the rows' noise
    // A prompt token is never free: when the rows' average over-explains the step
    // (it was measured with another number of rows), a tenth of the step is kept.
    const double rest = std::max(ms - logits_row_ms_ * n_logits, 0.1 * ms);
    update(prompt_token_ms_, rest / n_plain);
}

void Engine::order_prompts(std::vector<Slot *> &prompting) const {
    // Shortest remaining prefill first, with ageing: a prompt's key is the time its
    // remaining tokens take minus the time it has waited since it took its sequence,
    // so the prompt nearest its first token goes first (the total work stays the same;
    // measured: the slow tail of first tokens shrinks) and a long prompt passes fresh short ones
    // once it has waited as long as its own rest takes: nothing starves. Until the
    // prompt cost is measured, and with SARAI_PREFILL_ORDER=fifo, first come first served.
    static const bool fifo = [] {
        const char *v = std::getenv("SARAI_PREFILL_ORDER");
        return v && std::strcmp(v, "fifo") == 0;
    }();
    auto by_admission = [](const Slot *a, const Slot *b) { return a->admit_order < b->admit_order; };
    if (fifo || prompt_token_ms_ <= 0.0 || prompting.size() < 2) {
        std::sort(prompting.begin(), prompting.end(), by_admission);
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::pair<double, Slot *>> keyed;
    keyed.reserve(prompting.size());
    for (Slot *s : prompting) {
        const double rest_ms = prompt_token_ms_ * (double)(s->req.prompt.size() - s->prompt_done);
        const double waited_ms = std::chrono::duration<double, std::milli>(now - s->admitted).count();
        keyed.emplace_back(rest_ms - waited_ms, s);
    }
    std::sort(keyed.begin(), keyed.end(), [&](const auto &a, const auto &b) {
        return a.first != b.first ? a.first < b.first : by_admission(a.second, b.second);
    });
    for (size_t i = 0; i < keyed.size(); ++i) prompting[i] = keyed[i].second;
}

void Engine::set_step_budget_ms(double ms) {
    if (!(ms >= 0.0) || !std::isfinite(ms)) throw InvalidArgument("step_budget_ms must be a finite number >= 0");
    std::lock_guard<std::mutex> lock(mu_);
    step_budget_ms_ = ms;
}

double Engine::step_budget_ms() const {
    std::lock_guard<std::mutex> lock(mu_);
    return step_budget_ms_;
}

}  // namespace sarai
