// Reads sentences from stdin (one per line) and prints their translations, one per line.
// Usage: translate MODEL_DIR [BEAM]
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "automoe.hpp"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR [BEAM]\n";
        return 2;
    }
    try {
        automoe::Model model(argv[1]);
        automoe_decode_options options = automoe::default_options();
        if (argc > 2) options.beam = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
        std::vector<std::string> lines;
        for (std::string line; std::getline(std::cin, line);) lines.push_back(line);
        for (const auto &t : model.translate(lines, options)) std::cout << t.text << '\n';
    } catch (const automoe::Error &e) {
        std::cerr << "automoe: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
