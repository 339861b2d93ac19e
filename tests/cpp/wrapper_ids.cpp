// The automoe.hpp paths the example does not take, run by tests/capi_cpp.rs: reads one sentence
// of space-separated source ids per line (no end-of-sentence; an empty line is an empty
// sentence), prints Model::translate_ids's texts, then Model::translate_ids_nbest's lists in the
// example's n-best format, then whether config_json is a JSON object, then what the wrapper says
// to a model directory and a device name holding a NUL byte (which would reach the library cut
// short: the directory itself, the CPU).
// Usage: wrapper_ids MODEL_DIR BEAM NBEST
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "automoe.hpp"

int main(int argc, char **argv) {
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR BEAM NBEST\n";
        return 2;
    }
    try {
        const automoe::Model model(argv[1]);
        automoe_decode_options options = automoe::default_options();
        options.beam = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
        const size_t nbest = std::strtoul(argv[3], nullptr, 10);
        std::vector<std::vector<uint32_t>> sentences;
        for (std::string line; std::getline(std::cin, line);) {
            std::istringstream words(line);
            std::vector<uint32_t> ids;
            for (unsigned long id; words >> id;) ids.push_back(static_cast<uint32_t>(id));
            sentences.push_back(ids);
        }
        for (const auto &t : model.translate_ids(sentences, options)) std::cout << t.text << '\n';
        const auto all = model.translate_ids_nbest(sentences, nbest, options);
        std::cout << std::fixed << std::setprecision(6);
        for (size_t i = 0; i < all.size(); ++i)
            for (const auto &t : all[i]) std::cout << i << " ||| " << t.text << " ||| " << t.score << '\n';
        const std::string json = model.config_json();
        std::cout << "config_json " << (json.size() > 2 && json.front() == '{' && json.back() == '}' ? "object" : json) << '\n';
        const std::string dir = argv[1];
        const std::string nul_dir = dir + std::string("\0/elsewhere", 11), nul_device("cpu\0cuda:7", 10);
        for (const auto &[d, dev] : {std::pair{nul_dir, std::string("cpu")}, std::pair{dir, nul_device}}) {
            try {
                const automoe::Model refused(d, dev);
                std::cout << "loaded despite the NUL\n";
            } catch (const automoe::Error &e) {
                std::cout << e.what() << '\n';
            }
        }
    } catch (const automoe::Error &e) {
        std::cerr << "automoe: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
