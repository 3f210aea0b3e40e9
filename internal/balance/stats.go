package balance

import (
	"math"
	"sort"
)

// percentile follows Apache Commons Math's legacy Percentile estimator
// (the one CloudSim uses): position p(n+1)/100 with linear interpolation.
func percentile(data []float64, p float64) float64 {
	n := len(data)
	if n == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), data...)
	sort.Float64s(s)
	if n == 1 {
		return s[0]
	}
	pos := p * float64(n+1) / 100
	fpos := math.Floor(pos)
	d := pos - fpos
	if pos < 1 {
		return s[0]
	}
	if pos >= float64(n) {
		return s[n-1]
	}
	lower := s[int(fpos)-1]
	upper := s[int(fpos)]
	return lower + d*(upper-lower)
}

func median(data []float64) float64 { return percentile(data, 50) }

// mad is the median absolute deviation.
func mad(data []float64) float64 {
	if len(data) == 0 {
		return 0
	}
	m := median(data)
	dev := make([]float64, len(data))
	for i, v := range data {
		dev[i] = math.Abs(m - v)
	}
	return median(dev)
}

// iqr is the interquartile range.
func iqr(data []float64) float64 { return percentile(data, 75) - percentile(data, 25) }

// trimmedLen is CloudSim's countNonZeroBeginning: the length of data
// without its trailing zeros, but at least 1 for an all-zero array.
func trimmedLen(data []float64) int {
	i := len(data) - 1
	for i >= 0 {
		v := data[i]
		i--
		if v != 0 {
			break
		}
	}
	return i + 2
}

// simpleRegression mirrors Apache Commons Math's SimpleRegression
// (updating formulas) so that predictions match the literature's to the
// last bit. It returns intercept and slope.
func simpleRegression(x, y []float64) (intercept, slope float64, ok bool) {
	var n, sumX, sumY, sumXX, sumXY, xbar, ybar float64
	for i := range x {
		if n == 0 {
			xbar, ybar = x[i], y[i]
		} else {
			fact1 := 1.0 + n
			fact2 := n / (1.0 + n)
			dx := x[i] - xbar
			dy := y[i] - ybar
			sumXX += dx * dx * fact2
			sumXY += dx * dy * fact2
			xbar += dx / fact1
			ybar += dy / fact1
		}
		sumX += x[i]
		sumY += y[i]
		n++
	}
	if n < 2 || sumXX == 0 {
		return 0, 0, false
	}
	slope = sumXY / sumXX
	intercept = (sumY - slope*sumX) / n
	return intercept, slope, true
}

var regX = func() []float64 {
	x := make([]float64, HistoryLength)
	for i := range x {
		x[i] = float64(i + 1)
	}
	return x
}()

var tricubeCache = func() [HistoryLength + 1][]float64 {
	var c [HistoryLength + 1][]float64
	for n := range c {
		c[n] = computeTricube(n)
	}
	return c
}()

// tricubeWeights is CloudSim's getTricubeWeigts (cached; do not modify
// the result).
func tricubeWeights(n int) []float64 {
	if n < len(tricubeCache) {
		return tricubeCache[n]
	}
	return computeTricube(n)
}

func computeTricube(n int) []float64 {
	w := make([]float64, n)
	top := float64(n - 1)
	spread := top
	for i := 2; i < n; i++ {
		k := math.Pow(1-math.Pow((top-float64(i))/spread, 3), 3)
		if k > 0 {
			w[i] = 1 / k
		} else {
			w[i] = math.MaxFloat64
		}
	}
	if n > 2 {
		w[0], w[1] = w[2], w[2]
	}
	return w
}

// weightedRegression is CloudSim's createWeigthedLinearRegression: it
// weights only when at least 40 % of the weights are zero, which the
// tricube weights never are, so in practice it is plain least squares.
func weightedRegression(y, w []float64) (float64, float64, bool) {
	n := len(y)
	zero := 0
	for _, v := range w {
		if v <= 0 {
			zero++
		}
	}
	x := regX[:n]
	if float64(zero) >= 0.4*float64(n) {
		xw := make([]float64, n)
		yw := make([]float64, n)
		for i := range y {
			s := math.Sqrt(w[i])
			xw[i], yw[i] = s*x[i], s*y[i]
		}
		return simpleRegression(xw, yw)
	}
	return simpleRegression(x, y)
}

// loess is CloudSim's getLoessParameterEstimates.
func loess(y []float64) (float64, float64, bool) {
	return weightedRegression(y, tricubeWeights(len(y)))
}

// robustLoess is CloudSim's getRobustLoessParameterEstimates.
func robustLoess(y []float64) (float64, float64, bool) {
	n := len(y)
	a, b, ok := loess(y)
	if !ok {
		return 0, 0, false
	}
	res := make([]float64, n)
	abs := make([]float64, n)
	for i := range y {
		res[i] = y[i] - (a + b*regX[i])
		abs[i] = math.Abs(res[i])
	}
	w := tricubeWeights(n)
	s6 := median(abs) * 6
	w2 := make([]float64, n)
	for i := 2; i < n; i++ {
		k := math.Pow(1-math.Pow(res[i]/s6, 2), 2)
		if k > 0 {
			w2[i] = (1 / k) * w[i]
		} else {
			w2[i] = math.MaxFloat64
		}
	}
	if n > 2 {
		w2[0], w2[1] = w2[2], w2[2]
	}
	return weightedRegression(y, w2)
}

// rSquared regresses y on the columns of x (with intercept) by least
// squares and returns the coefficient of determination.
func rSquared(x [][]float64, y []float64) (float64, bool) {
	n := len(y)
	k := len(x) + 1
	if n <= k {
		return 0, false
	}
	// Normal equations A b = c with A = X'X.
	a := make([]float64, k*k)
	c := make([]float64, k)
	row := make([]float64, k)
	for i := 0; i < n; i++ {
		row[0] = 1
		for j := range x {
			row[j+1] = x[j][i]
		}
		for p := 0; p < k; p++ {
			c[p] += row[p] * y[i]
			for q := 0; q < k; q++ {
				a[p*k+q] += row[p] * row[q]
			}
		}
	}
	// Gaussian elimination with partial pivoting.
	for col := 0; col < k; col++ {
		piv := col
		for r := col + 1; r < k; r++ {
			if math.Abs(a[r*k+col]) > math.Abs(a[piv*k+col]) {
				piv = r
			}
		}
		if math.Abs(a[piv*k+col]) < 1e-12 {
			return 0, false
		}
		if piv != col {
			for q := 0; q < k; q++ {
				a[col*k+q], a[piv*k+q] = a[piv*k+q], a[col*k+q]
			}
			c[col], c[piv] = c[piv], c[col]
		}
		for r := col + 1; r < k; r++ {
			f := a[r*k+col] / a[col*k+col]
			for q := col; q < k; q++ {
				a[r*k+q] -= f * a[col*k+q]
			}
			c[r] -= f * c[col]
		}
	}
	b := make([]float64, k)
	for r := k - 1; r >= 0; r-- {
		s := c[r]
		for q := r + 1; q < k; q++ {
			s -= a[r*k+q] * b[q]
		}
		b[r] = s / a[r*k+r]
	}
	var mean float64
	for _, v := range y {
		mean += v
	}
	mean /= float64(n)
	var ssRes, ssTot float64
	for i := 0; i < n; i++ {
		pred := b[0]
		for j := range x {
			pred += b[j+1] * x[j][i]
		}
		ssRes += (y[i] - pred) * (y[i] - pred)
		ssTot += (y[i] - mean) * (y[i] - mean)
	}
	if ssTot == 0 {
		return 0, false
	}
	return 1 - ssRes/ssTot, true
}
