// sarai::Engine: continuous batching of many sequences over one llama_context
// (n_seq_max = N, one unified KV cache), in the shape of llama.cpp's server:
// one loop, one batch. Each step() puts one token of every generating
// sequence and prompt chunks of admitting ones into one persistent
// llama_batch, calls llama_decode once, and samples every sequence that needs
// a token with that sequence's own sampler chain.
//
// Determinism: llama.cpp's logits depend on how tokens are grouped into
// batches (other batch sizes take other matmul kernels and accumulation
// orders), so a sequence's greedy output in a batch equals its output alone
// on F32 models (tested), but on quantized models it may diverge after some
// tokens; prefix reuse (which changes the prompt's split) inherits that.
//
// Step budget (set_step_budget_ms): while some sequence generates, a step
// takes only as many prompt tokens as its measured costs say fit in the
// target time, so a long prompt cannot hold every stream's next token back
// for a whole n_batch chunk. With nothing generating, prompts get n_batch.
//
// Speculation (set_speculation, engine_spec.cpp): a generating sequence may
// add a draft after its next token, proposed by an n-gram lookup in its own
// context; the draft's rows get logits, the sequence's own sampler chain
// samples them in order, the longest prefix it agrees with is kept and the
// rest of the draft's KV cells are removed. Every emitted token is the one
// the chain samples after the accepted ones, so the output is what plain
// decoding gives (exactly so where a batch's shape does not change llama.cpp's
// arithmetic: F32 models, F32 KV cache, no flash attention); only the number
// of steps changes.
// Draft lengths follow the measured acceptance and step costs (spec.h).
//
// Thread rule: ONE thread drives the engine (step, release, provide_token,
// sample_with, logits, clear, set_threads) at a time. submit() and cancel()
// may come from any thread at any moment, including during a step: both only
// touch the queue and the slots' cancel flags under the engine's mutex (a
// submitted request starts at the next step). The accessors
// idle/n_active/n_queued/stats are safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "context.h"
#include "llama.h"
#include "media.h"
#include "model.h"
#include "sampler.h"
#include "state_cache.h"
#include "spec.h"

namespace sarai {

struct Request {
    std::vector<llama_token> prompt;
    SamplerParams sampling;
    int32_t max_tokens = -1;         // -1 or 0: until the sequence reaches the end of its context
    bool ignore_eos = false;         // end-of-generation tokens are emitted and generation goes on
    int32_t n_probs = -1;            // -1: off; >= 0: logprob of the sampled token + top n_probs
    bool external_sampling = false;  // NEED_TOKEN events: the caller chooses every token
    // Special tokens whose text is part of the answer (a chat format's tool-call
    // markers, which its output parser must see); other special tokens emit no text.
    std::vector<llama_token> preserved_tokens;
    // Speculation: the most draft tokens per step (-1: the engine's default,
    // 0: none) and the tokens drafted whatever the costs (-1: the engine's default).
    int32_t draft_max = -1;
    int32_t draft_min = -1;
    // Images in the prompt (media.h, made by Vision::tokenize): their positions hold
    // placeholders, their embeddings are decoded in place of token embeddings.
    std::vector<MediaSpan> media;
};

enum class EventKind : int32_t { Token = 0, Done = 1, Error = 2, NeedToken = 3 };

struct Event {
    int64_t id = 0;
    EventKind kind = EventKind::Token;
    llama_token token = -1;
    std::string text;  // complete UTF-8 bytes released by this event (DONE: the flushed rest)
    bool eog = false;
    float logprob = 0.0f;                             // when n_probs >= 0
    std::vector<std::pair<llama_token, float>> top;   // n_probs best (token, logprob), best first
    std::string finish_reason;                        // DONE: "stop", "length", "cancelled"
    std::string error;                                // ERROR: the message
    int32_t n_prompt = 0, n_reused = 0, n_generated = 0;
    int32_t n_drafted = 0, n_draft_accepted = 0;  // draft tokens verified / accepted so far
    std::string speculation;                      // DONE: why the request did not speculate ("" if it could)
};

struct EngineStats {
    int64_t n_steps = 0;          // step() calls that decoded something
    int64_t n_decode_calls = 0;   // llama_decode calls (more than n_steps after retries)
    int64_t n_batch_tokens = 0;   // tokens submitted in successful decodes
    int64_t n_sampled = 0;        // tokens sampled (or provided)
    double t_step_ms = 0.0;       // wall time inside step()
    double t_decode_ms = 0.0;     // wall time inside llama_decode
    int64_t n_prompt_tokens = 0;  // prompt tokens in successful decodes
    int64_t n_budgeted_steps = 0; // steps in which the step budget held prompt tokens back
    int32_t max_prompt_beside_gen = 0;  // the most prompt tokens a step carried beside generating rows
    // The last step that decoded something: its generating rows, prompt tokens,
    // and the prompt-token budget it ran under (-1: none applied).
    int32_t last_gen_rows = 0, last_prompt_tokens = 0, last_budget = -1;
    // The engine's running cost estimates (0: not measured yet); not reset by reset_stats().
    double logits_row_ms = 0.0, prompt_token_ms = 0.0;
    // Speculation: draft tokens verified and accepted, steps that verified a draft,
    // and the decode-step cost line drafts are planned with (0: not measured yet).
    int64_t n_drafted = 0, n_draft_accepted = 0, n_spec_steps = 0;
    double step_fixed_ms = 0.0, step_row_ms = 0.0;
};

class Engine {
  public:
    // p.n_seq_max sequences, p.step_budget_ms as set_step_budget_ms takes it.
    Engine(std::shared_ptr<Model> model, const ContextParams &p);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    // Validates (InvalidArgument) and queues a request; returns its id.
    int64_t submit(Request req);
    // One scheduling round (see the file comment). Returns the events of this round.
    std::vector<Event> step();
    // From any thread: the next step ends the request with DONE "cancelled";
    // a decode in flight is aborted when every sequence in it is cancelled.
    // Returns false for an unknown (or already finished) id.
    bool cancel(int64_t id);
    // The caller ends the request itself (e.g. a stop string): no event; the
    // sequence's cached tokens stay for prefix reuse. False for unknown ids.
    bool release(int64_t id);

    // External sampling: the raw logits the request's NEED_TOKEN refers to
    // (a copy owned by the engine, valid until provide_token/sample_with).
    const std::vector<float> &logits(int64_t id) const;
    // Use `token` as the request's next token; returns its TOKEN (and DONE) events.
    std::vector<Event> provide_token(int64_t id, llama_token token);
    // Run the request's own sampler chain on caller-modified logits (n_vocab floats).
    std::vector<Event> sample_with(int64_t id, const float *logits, size_t n);

    bool idle() const;
    int32_t n_active() const;
    int32_t n_queued() const;
    int32_t n_seq() const { return (int32_t)slots_.size(); }
    uint32_t n_ctx() const { return n_ctx_; }
    uint32_t n_ctx_seq() const { return n_ctx_seq_; }
    uint32_t n_batch() const { return n_batch_; }
    // Cells the sequences' tokens occupy (a prefix shared by seq_cp counts
    // once per sequence, so this is an upper bound) and the cache's size.
    int64_t kv_used() const;
    EngineStats stats() const;
    void reset_stats();
    PerfCounters perf() const { return perf_of(ctx_); }
    void perf_reset() { llama_perf_context_reset(ctx_); }
    void set_threads(int32_t n_threads, int32_t n_threads_batch);
    // The step time to aim at while sequences generate, in ms; 0 turns the budget off.
    void set_step_budget_ms(double ms);
    double step_budget_ms() const;
    // Prompt tokens a step beside `n_gen` generating rows may take under the
    // budget now (n_batch - n_gen when the budget is off or n_gen is 0).
    int32_t prompt_budget(int32_t n_gen) const;
    // Speculation defaults for requests that do not set their own (validated).
    void set_speculation(const SpecConfig &c);
    SpecConfig speculation() const;
    // Drops every request (active and queued, without events) and the whole KV cache.
    void clear();

    // The state cache (engine_state.cpp): a sequence about to be taken by another
    // request leaves its KV state there, and a new request restores the longest
    // cached prefix of its prompt when that beats what the live sequences give.
    // Null (the default) turns it off. The cache may be shared by several engines
    // of the same model and layout.
    void set_state_cache(std::shared_ptr<StateCache> cache);
    std::shared_ptr<StateCache> state_cache() const;
    // Saves every idle sequence's state to the cache (as if another request took
    // it): what a server shutting down leaves in its disk tier for the next start.
    void keep_idle_states();

    // Manual access to one idle sequence (engine_seq.cpp): what llama-cpp-python's
    // low-level calls (eval, input_ids, save_state/load_state) need. A sequence
    // running a request is refused (InvalidArgument).
    std::vector<llama_token> cached(int32_t seq) const;
    // Evaluates `tokens` after the sequence's cached ones, n_batch at a time;
    // returns the logits after the last one (n_vocab floats).
    std::vector<float> eval(int32_t seq, const std::vector<llama_token> &tokens);
    // The sequence's KV state (llama_state_seq_*) and its restoration.
    std::string seq_state(int32_t seq) const;
    // The shortest prefix of the sequence's tokens its cells (and so its state)
    // can serve: 1, more on a sliding-window or recurrent memory, 0 for none.
    uint32_t seq_serves_from(int32_t seq) const;
    // Loads a state of `tokens`: its cells must hold positions 0..n-1, or on a
    // sliding-window memory at least the window the token at position n needs.
    void set_seq_state(int32_t seq, const std::string &data, const std::vector<llama_token> &tokens);

  private:
    struct Slot;
    struct Pending;
    Slot &idle_slot(int32_t seq) const;

    void admit_locked();
    void choose_prefix(Slot &slot, const std::vector<llama_token> &prompt);
    size_t own_prefix(const Slot &slot, size_t keep) const;
    uint32_t serves_from(const Slot &slot) const;
    void stash(const Slot &slot);
    bool restore(Slot &slot, const std::vector<llama_token> &prompt, size_t live);
    void finish(Slot &slot, std::vector<Event> &out, EventKind kind, const char *reason, const std::string &error);
    // Samples (or asks for, NEED_TOKEN) the slot's next token from `row` and emits it;
    // returns it, or -1 when none was emitted (an error, a NEED_TOKEN).
    llama_token sample_slot(Slot &slot, const float *row, std::vector<Event> &out);
    void emit_token(Slot &slot, llama_token tok, const float *raw_logits, std::vector<Event> &out);
    Slot *find_active(int64_t id) const;
    bool decode_batch(std::vector<Event> &out);
    int32_t prompt_budget_locked(int32_t n_gen) const;
    void order_prompts(std::vector<Slot *> &prompting) const;  // engine_budget.cpp
    void learn_costs(int32_t n_logits, int32_t n_plain, double ms);
    // Copies batch row `from` (token, position, sequence, logits flag, owner, kind) to `to`:
    // compacting the batch after rows left it.
    void move_row(int32_t from, int32_t to);
    static bool abort_cb(void *data);
    // Speculation (engine_spec.cpp).
    std::string spec_off_reason(const Slot &slot) const;
    void plan_drafts(bool prompts_waiting, double step_budget_ms);
    void verify_draft(Slot &slot, int32_t first_row, std::vector<Event> &out);
    int32_t drop_drafts(int32_t from, int32_t n_total);
    void spec_counts(const Slot &slot, Event &ev) const;
    // Media (engine_media.cpp): prompt checks, the images' part of a step, prefix alignment.
    struct MediaJob {
        Slot *slot = nullptr;
        const MediaSpan *span = nullptr;  // in slot->req.media, which no step changes
        size_t from = 0;                  // the prompt index of the first position decoded
        int32_t count = 0;
    };
    void check_prompt(const Request &req) const;
    int32_t plan_media(Slot &slot, size_t k, int32_t room);
    void decode_media(std::vector<Event> &out);
    void align_to_media(Slot &slot);

    std::shared_ptr<Model> model_;
    llama_context *ctx_ = nullptr;
    llama_memory_t mem_ = nullptr;
    uint32_t n_ctx_ = 0, n_ctx_seq_ = 0, n_batch_ = 0;
    int32_t n_vocab_ = 0;
    int32_t n_swa_ = 0;

    // Guards slots_' request state, queue_ and next_id_ against cancel() and
    // the accessors; released while llama_decode runs so that cancel() never waits for it.
    mutable std::mutex mu_;
    std::vector<std::unique_ptr<Slot>> slots_;
    std::deque<std::unique_ptr<Pending>> queue_;
    std::vector<std::pair<int64_t, int32_t>> cancelled_queued_;  // (id, n_prompt) cancelled while queued: DONE next step
    int64_t next_id_ = 1;
    uint64_t admit_counter_ = 0;             // FIFO order of prompt chunks

    // The persistent batch and, per batch row, the slot that owns it.
    llama_batch batch_{};
    std::vector<Slot *> owner_;
    std::vector<uint8_t> row_is_prompt_;
    std::vector<uint8_t> row_is_draft_;      // verified with its sequence's first row
    std::vector<Slot *> decoding_;           // the slots in the decode in flight (abort callback)

    EngineStats stats_;
    std::shared_ptr<StateCache> cache_;

    // Step budget: target ms (0: off) and the running cost model of a step,
    // t = logits_row_ms_ * (rows that produce logits) + prompt_token_ms_ * (other rows).
    double step_budget_ms_ = 0.0;
    double logits_row_ms_ = 0.0, prompt_token_ms_ = 0.0;  // 0: not measured yet

    SpecConfig spec_;
    StepCostLine step_cost_;  // decode-only steps: what a draft row costs now
    bool can_roll_back_ = true;  // the memory can drop a sequence's last cells (not recurrent/hybrid)
    std::vector<MediaJob> media_jobs_;  // this step's image pieces, decoded after its token batch
};

}  // namespace sarai
