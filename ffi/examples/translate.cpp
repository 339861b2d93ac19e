// Reads sentences from stdin (one per line) and prints their translations, one per line; with
// NBEST > 1, up to NBEST lines "SENTENCE ||| TRANSLATION ||| SCORE" per sentence, best first (the
// format of `automoe translate --nbest`).
// Usage: translate MODEL_DIR [BEAM [NBEST]]
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "automoe.hpp"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR [BEAM [NBEST]]\n";
        return 2;
    }
    try {
        automoe::Model model(argv[1]);
        automoe_decode_options options = automoe::default_options();
        if (argc > 2) options.beam = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
        std::vector<std::string> lines;
        for (std::string line; std::getline(std::cin, line);) lines.push_back(line);
        const size_t nbest = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 1;
        if (nbest == 1) {
            for (const auto &t : model.translate(lines, options)) std::cout << t.text << '\n';
        } else {
            const auto all = model.translate_nbest(lines, nbest, options);
            std::cout << std::fixed << std::setprecision(6);
            for (size_t i = 0; i < all.size(); ++i)
                for (const auto &t : all[i]) std::cout << i << " ||| " << t.text << " ||| " << t.score << '\n';
        }
    } catch (const automoe::Error &e) {
        std::cerr << "automoe: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
