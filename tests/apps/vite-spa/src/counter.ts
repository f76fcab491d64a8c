export function setupCounter(button: HTMLButtonElement): void {
  let count = 0;
  const render = (value: number) => {
    count = value;
    button.textContent = `count is ${count}`;
  };
  button.addEventListener("click", () => render(count + 1));
  render(0);
}
