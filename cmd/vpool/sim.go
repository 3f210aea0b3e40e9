package main

import (
	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/simulate/simcmd"
)

// addSim adds `vpool sim`: trace replay through the real placement code.
func addSim(root *cobra.Command) { root.AddCommand(simcmd.New()) }
