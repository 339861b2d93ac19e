// automoe.hpp: a header-only C++17 wrapper over automoe.h. Handles are RAII (move-only); every
// failure throws automoe::Error carrying the status and the library's message.
#ifndef AUTOMOE_HPP
#define AUTOMOE_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "automoe.h"

namespace automoe {

/// A failed call: the status code and the library's message.
class Error : public std::runtime_error {
  public:
    Error(automoe_status status, const std::string &message)
        : std::runtime_error(std::string(automoe_status_name(status)) + ": " + message), status_(status) {}
    automoe_status status() const noexcept { return status_; }

  private:
    automoe_status status_;
};

namespace detail {
inline void check(automoe_status s) {
    if (s != AUTOMOE_OK) throw Error(s, automoe_last_error_message());
}

// Owners of what the library returns, so that an exception thrown while copying out (bad_alloc,
// a failed entry) cannot leak it.
struct TranslationsFree {
    void operator()(automoe_translations *t) const noexcept { automoe_translations_free(t); }
};
struct StringFree {
    void operator()(char *s) const noexcept { automoe_string_free(s); }
};
using TranslationsPtr = std::unique_ptr<automoe_translations, TranslationsFree>;
using StringPtr = std::unique_ptr<char, StringFree>;

/// `s` as a C string; a std::string can hold NUL bytes, which would silently cut the string the
/// library sees (a sentence, a model directory, a device name), so one with a NUL is refused.
inline const char *c_string(const std::string &s, const std::string &what) {
    if (s.find('\0') != std::string::npos) throw Error(AUTOMOE_INVALID_ARGUMENT, what + " contains a NUL byte");
    return s.c_str();
}

inline std::vector<const char *> c_strings(const std::vector<std::string> &sentences) {
    std::vector<const char *> ptrs;
    ptrs.reserve(sentences.size());
    for (size_t i = 0; i < sentences.size(); ++i) ptrs.push_back(c_string(sentences[i], "sentence " + std::to_string(i)));
    return ptrs;
}
}  // namespace detail

/// Decoding options with the library's defaults.
inline automoe_decode_options default_options() {
    automoe_decode_options o;
    automoe_decode_options_init(&o);
    return o;
}

/// One translated sentence.
struct Translation {
    std::string text;
    std::vector<uint32_t> ids;
    double score;
};

/// A loaded model. Immutable: translate() may be called from many threads at once.
class Model {
  public:
    /// Loads a model directory onto a device ("cpu" or "cuda:N").
    explicit Model(const std::string &dir, const std::string &device = "cpu") {
        detail::check(automoe_model_load(detail::c_string(dir, "the model directory"), detail::c_string(device, "the device name"), &model_));
    }
    ~Model() { automoe_model_free(model_); }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;
    Model(Model &&other) noexcept : model_(std::exchange(other.model_, nullptr)) {}
    Model &operator=(Model &&other) noexcept {
        if (this != &other) {
            automoe_model_free(model_);
            model_ = std::exchange(other.model_, nullptr);
        }
        return *this;
    }

    automoe_model_info info() const {
        automoe_model_info i;
        detail::check(automoe_model_get_info(model_, &i));
        return i;
    }

    std::string config_json() const {
        char *s = nullptr;
        detail::check(automoe_model_config_json(model_, &s));
        const detail::StringPtr owned(s);
        return std::string(owned.get());
    }

    std::vector<Translation> translate(const std::vector<std::string> &sentences,
                                       const automoe_decode_options &options = default_options()) const {
        const std::vector<const char *> ptrs = detail::c_strings(sentences);
        automoe_translations *t = nullptr;
        detail::check(automoe_translate(model_, ptrs.data(), ptrs.size(), &options, &t));
        return collect(detail::TranslationsPtr(t));
    }

    std::vector<Translation> translate_ids(const std::vector<std::vector<uint32_t>> &sentences,
                                           const automoe_decode_options &options = default_options()) const {
        const IdArrays a(sentences);
        automoe_translations *t = nullptr;
        detail::check(automoe_translate_ids(model_, a.ptrs.data(), a.lens.data(), a.ptrs.size(), &options, &t));
        return collect(detail::TranslationsPtr(t));
    }

    /// The `nbest` best translations of each sentence (1 <= nbest <= options.beam), best first;
    /// a sentence can have fewer, never none.
    std::vector<std::vector<Translation>> translate_nbest(const std::vector<std::string> &sentences, size_t nbest,
                                                          const automoe_decode_options &options = default_options()) const {
        const std::vector<const char *> ptrs = detail::c_strings(sentences);
        automoe_translations *t = nullptr;
        detail::check(automoe_translate_nbest(model_, ptrs.data(), ptrs.size(), &options, nbest, &t));
        return collect_nbest(detail::TranslationsPtr(t));
    }

    /// translate_ids, keeping the `nbest` best translations of each sentence.
    std::vector<std::vector<Translation>> translate_ids_nbest(const std::vector<std::vector<uint32_t>> &sentences,
                                                              size_t nbest,
                                                              const automoe_decode_options &options = default_options()) const {
        const IdArrays a(sentences);
        automoe_translations *t = nullptr;
        detail::check(automoe_translate_ids_nbest(model_, a.ptrs.data(), a.lens.data(), a.ptrs.size(), &options, nbest, &t));
        return collect_nbest(detail::TranslationsPtr(t));
    }

    const automoe_model *get() const noexcept { return model_; }

  private:
    /// The C arrays of pre-tokenised sentences: a pointer and a length per sentence.
    struct IdArrays {
        std::vector<const uint32_t *> ptrs;
        std::vector<size_t> lens;
        explicit IdArrays(const std::vector<std::vector<uint32_t>> &sentences) {
            for (const auto &s : sentences) {
                ptrs.push_back(s.data());
                lens.push_back(s.size());
            }
        }
    };

    /// Translation `rank` of sentence `i` (the owner frees the result if this throws).
    static Translation entry(const automoe_translations *t, size_t i, size_t rank) {
        const uint32_t *ids = nullptr;
        size_t len = 0;
        detail::check(automoe_translations_nbest_ids(t, i, rank, &ids, &len));
        return Translation{automoe_translations_nbest_text(t, i, rank), std::vector<uint32_t>(ids, ids + len),
                           automoe_translations_nbest_score(t, i, rank)};
    }

    static std::vector<std::vector<Translation>> collect_nbest(const detail::TranslationsPtr t) {
        std::vector<std::vector<Translation>> out(automoe_translations_count(t.get()));
        for (size_t i = 0; i < out.size(); ++i) {
            for (size_t r = 0; r < automoe_translations_nbest_count(t.get(), i); ++r) out[i].push_back(entry(t.get(), i, r));
        }
        return out;
    }

    static std::vector<Translation> collect(const detail::TranslationsPtr t) {
        std::vector<Translation> out;
        size_t n = automoe_translations_count(t.get());
        out.reserve(n);
        for (size_t i = 0; i < n; ++i) out.push_back(entry(t.get(), i, 0));
        return out;
    }

    automoe_model *model_ = nullptr;
};

}  // namespace automoe

#endif  // AUTOMOE_HPP
