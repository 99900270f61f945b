// The subcommands of `upcycle`, one file each (cmd_NAME.cpp).
#pragma once
#include <string>
#include <vector>

namespace upcycle {

using Args = std::vector<std::string>;

int cmd_inspect(const Args& args);
int cmd_export(const Args& args);
int cmd_tokenize(const Args& args);
int cmd_init(const Args& args);
int cmd_forward(const Args& args);
int cmd_tune(const Args& args);
int cmd_bench(const Args& args);
int cmd_eval(const Args& args);
int cmd_convert(const Args& args);
int cmd_run(const Args& args);
int cmd_generate(const Args& args);
int cmd_data(const Args& args);
int cmd_demo(const Args& args);
int cmd_sweep(const Args& args);

}  // namespace upcycle
