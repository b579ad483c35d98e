// Goroutines contending one sync.Mutex, with GOMAXPROCS threads: Go parks
// a goroutine that waits for a Mutex in its own scheduler (a semaphore),
// not in a futex. Prints the goroutines' summed Lock() wait in ns.
// Usage: go_mutex GOROUTINES SECONDS HOLD_US
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

var mu sync.Mutex

func spin(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
	}
}

//go:noinline
func updateShared(hold time.Duration) time.Duration {
	t0 := time.Now()
	mu.Lock()
	waited := time.Since(t0)
	spin(hold)
	mu.Unlock()
	return waited
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	secs, _ := strconv.ParseFloat(os.Args[2], 64)
	holdUs, _ := strconv.Atoi(os.Args[3])
	hold := time.Duration(holdUs) * time.Microsecond
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	waits := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(end) {
				waits[i] += updateShared(hold)
				spin(hold / 4)
			}
		}(i)
	}
	wg.Wait()
	var total time.Duration
	for _, w := range waits {
		total += w
	}
	fmt.Println(total.Nanoseconds())
}
