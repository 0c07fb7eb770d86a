// The gpurun-store executable: a standalone store server (same as `gpurun store`).
#include "gpurun/tools/store_main.h"

int main(int argc, char** argv) { return gpurun::rendezvous::store_main(argc, argv); }
